"""Caption the images of a kohya dataset that have no caption (or all of them with `caption_overwrite`), on the
instance, before training (`dataset.captions: auto`) or alone (`only`, from `lorarun caption`).

Each caption is written twice: beside its image in the instance's dataset (so the training that follows reads it,
as kohya would), and under `<output_dir>/captions/` as an output the controller pulls home like any other (then
placed beside the user's own images). `captions/captions.json` records which model wrote which caption and what
it said; it is in the job's manifest. A caption starts with the trigger word: `caption_trigger`, else the
folder's class tokens (`10_mychar` → `mychar`), so a captioned LoRA keeps the word the kohya folder gave it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lorarun.image.caption_config import caption_model
from lorarun.image.dataset_scan import IMAGE_EXTENSIONS
from lorarun.image.engine.events import EventLog, PhaseProgress

CAPTIONS_DIR = "captions"
RECORD_FILE = "captions.json"


@dataclass(frozen=True)
class CaptionTask:
    image: Path
    caption: Path
    class_tokens: str


@dataclass(frozen=True)
class CaptionReport:
    model: str
    written: int
    kept: int


def class_tokens(folder: Path) -> str:
    prefix, _, tokens = folder.name.partition("_")
    return tokens.strip() if prefix.isdigit() else folder.name


def plan(root: Path, caption_extension: str, overwrite: bool) -> tuple[list[CaptionTask], int]:
    """(images to caption, how many keep the caption they have). kohya layout: images in `<repeats>_<tokens>/`."""
    todo: list[CaptionTask] = []
    kept = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() not in IMAGE_EXTENSIONS or not image.is_file():
                continue
            caption = image.with_suffix(caption_extension)
            if caption.is_file() and caption.stat().st_size > 0 and not overwrite:
                kept += 1
                continue
            todo.append(CaptionTask(image, caption, class_tokens(folder)))
    return todo, kept


def caption_line(trigger: str | None, tokens: str, text: str) -> str:
    word = tokens if trigger is None else trigger.strip()
    if word and text.lower().startswith(word.lower()):
        return text
    return f"{word}, {text}" if word and text else (word or text)


def caption_dataset(cfg, events: EventLog, should_stop: Callable[[], bool] = lambda: False) -> CaptionReport:
    from PIL import Image, ImageOps

    d = cfg.dataset
    spec = caption_model(d.caption_model)
    root = Path(d.train_data_dir)
    todo, kept = plan(root, d.caption_extension, d.caption_overwrite)
    events.emit("captioning", model=spec.name, repo=spec.repo_id or None, images=len(todo), kept=kept)
    if not todo:
        return CaptionReport(spec.name, 0, kept)
    from lorarun.image.engine.caption.models import load_captioner

    progress = PhaseProgress(events, "captioning", len(todo), unit="images")
    progress(0)
    try:
        captioner = load_captioner(spec, cfg.device)
    except OSError as exc:  # no network, a repository gone or gated: one line naming the model, no traceback
        from lorarun.image.schema import ConfigError

        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"dataset.caption_model: {spec.name} ({spec.repo_id}) could not be loaded on the instance: {first}"
        ) from None
    batch = 8 if captioner.device.type == "cuda" else 2
    out_root = Path(cfg.output_dir) / CAPTIONS_DIR
    record: dict[str, dict] = {}
    done = 0
    for start in range(0, len(todo), batch):
        if should_stop():
            break
        chunk = todo[start : start + batch]
        images = []
        for task in chunk:
            with Image.open(task.image) as im:
                images.append(ImageOps.exif_transpose(im).convert("RGB"))
        for task, text in zip(chunk, captioner.caption(images)):
            line = caption_line(d.caption_trigger, task.class_tokens, text)
            rel_image = task.image.relative_to(root).as_posix()
            rel_caption = task.caption.relative_to(root).as_posix()
            _write(task.caption, line)
            copy = out_root / rel_caption
            _write(copy, line)
            events.output("caption", copy, kind="caption", image=rel_image)
            record[rel_image] = {"caption_file": rel_caption, "model": spec.repo_id or spec.name, "text": line}
        done += len(chunk)
        progress(done)
    summary = {"model": spec.name, "repo": spec.repo_id or None, "trigger": d.caption_trigger, "captions": record}
    _write(out_root / RECORD_FILE, json.dumps(summary, indent=1, ensure_ascii=False))
    events.output("captions", out_root / RECORD_FILE, kind="captions_record", written=len(record), kept=kept)
    _free(captioner)
    return CaptionReport(spec.name, len(record), kept)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
    os.replace(tmp, path)


def _free(captioner) -> None:
    """The captioner leaves the GPU before the training model loads."""
    import torch

    captioner.model = None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
