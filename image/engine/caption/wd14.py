"""The WD14 tagger (SmilingWolf's wd-*-tagger models): Danbooru-style tags from the model's ONNX file through
onnxruntime, as kohya's finetune/tag_images_by_wd14_tagger.py runs it with `--onnx` and SmilingWolf's own demo
does. What the model expects and gives, from those two readers:

- input: one NHWC float32 batch, BGR, 0-255 (no normalisation), each image padded to a square with white and
  resized to the model's input size (448 for the v2/v3 models; read from the session, not assumed);
- output: one sigmoid probability per row of `selected_tags.csv` (tag_id,name,category,count), category 9 a
  rating, 0 a general tag, 4 a character;
- tags kept: general ones at ≥ 0.35 (kohya's `--general_threshold` default), characters at ≥ 0.85 (SmilingWolf's
  demo default: a character tag is a strong claim), ratings left out (kohya's default); underscores become
  spaces in tags longer than 3 characters (kohya's `--remove_underscore`, so `^_^` stays), joined by ", ";
  general tags by confidence, then the characters.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorarun.image.caption_config import CaptionModel

GENERAL_THRESHOLD = 0.35
CHARACTER_THRESHOLD = 0.85
RATING, GENERAL, CHARACTER = "9", "0", "4"
MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"


@dataclass(frozen=True)
class TagTable:
    names: tuple[str, ...]
    categories: tuple[str, ...]


def read_tags(path: Path) -> TagTable:
    """selected_tags.csv: a header `tag_id,name,category,count`, then one row per model output."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    if header[:3] != ["tag_id", "name", "category"]:
        raise ValueError(f"{path.name}: unexpected header {header[:4]} (expected tag_id,name,category,count)")
    return TagTable(tuple(_readable(r[1]) for r in body), tuple(r[2] for r in body))


def _readable(tag: str) -> str:
    return tag.replace("_", " ") if len(tag) > 3 else tag


def square_bgr(image, size: tuple[int, int]):
    """One PIL image as the tagger reads it: white-padded to a square, resized, BGR float32 HWC."""
    import numpy as np
    from PIL import Image

    rgb = image.convert("RGB")
    side = max(rgb.size)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    height, width = size
    if canvas.size != (width, height):
        canvas = canvas.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(canvas, dtype=np.float32)[:, :, ::-1]


def tags_of(probabilities, table: TagTable) -> str:
    general = [
        (p, name)
        for p, name, cat in zip(probabilities, table.names, table.categories)
        if cat == GENERAL and p >= GENERAL_THRESHOLD
    ]
    characters = [
        (p, name)
        for p, name, cat in zip(probabilities, table.names, table.categories)
        if cat == CHARACTER and p >= CHARACTER_THRESHOLD
    ]
    ordered = sorted(general, key=lambda t: -t[0]) + sorted(characters, key=lambda t: -t[0])
    return ", ".join(name for _, name in ordered)


@dataclass
class Tagger:
    """Same face as models.Captioner: `caption(images)`, `device.type`, and `model` (dropped when done)."""

    spec: CaptionModel
    model: Any  # the onnxruntime InferenceSession
    table: TagTable
    device: Any
    input_name: str = ""
    size: tuple[int, int] = (448, 448)
    fixed_batch: int | None = None  # a model exported with a fixed batch axis takes exactly that many (kohya)
    dtype: Any = field(default=None)

    def caption(self, images: list) -> list[str]:
        import numpy as np

        arrays = [square_bgr(im, self.size) for im in images]
        step = self.fixed_batch or len(arrays)
        texts: list[str] = []
        for start in range(0, len(arrays), step):
            chunk = arrays[start : start + step]
            padded = chunk + [chunk[-1]] * (step - len(chunk))  # a fixed batch is filled, the extra rows dropped
            probabilities = self.model.run(None, {self.input_name: np.stack(padded)})[0][: len(chunk)]
            texts += [tags_of(row, self.table) for row in probabilities]
        return texts


def session_for(model_file: Path, use_cuda: bool):
    """An InferenceSession on the GPU when onnxruntime has CUDA (the image's onnxruntime-gpu), else the CPU. The
    CUDA provider needs cuDNN and cuBLAS: torch's own copies, loaded by importing torch first (and by
    `preload_dlls`, onnxruntime ≥ 1.21), as onnxruntime's documentation for PyTorch images says."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if use_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        import torch  # noqa: F401  (loads the CUDA libraries the provider links against)

        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(model_file), providers=providers)


def load_tagger(spec: CaptionModel, device: str = "auto") -> Tagger:
    import torch

    use_cuda = torch.cuda.is_available() and device != "cpu"
    try:
        if spec.name.startswith("builtin:"):
            from lorarun.image.engine.caption.tiny import build_tiny_wd14

            folder = build_tiny_wd14()
            model_file, tags_file = folder / MODEL_FILE, folder / TAGS_FILE
        else:
            from huggingface_hub import hf_hub_download

            model_file = Path(hf_hub_download(spec.repo_id, MODEL_FILE))
            tags_file = Path(hf_hub_download(spec.repo_id, TAGS_FILE))
        session = session_for(model_file, use_cuda)
        table = read_tags(tags_file)
    except OSError:
        raise
    except Exception as exc:  # the Hub's errors, onnxruntime's on a bad file: the caller's one line (run.py)
        raise OSError(f"{type(exc).__name__}: {exc}") from exc
    first = session.get_inputs()[0]
    batch, height, width, _ = first.shape  # NHWC; the batch axis may be named ("N", "batch_size") or fixed
    on = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    fixed = batch if isinstance(batch, int) and batch > 0 else None
    return Tagger(spec, session, table, torch.device(on), first.name, (int(height), int(width)), fixed)
