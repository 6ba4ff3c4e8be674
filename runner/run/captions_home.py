"""Captions made on the instance, placed beside the user's own images once they are home (`dataset.captions:
auto|only`). They arrive as outputs (`<output>/captions/<folder>/<image>.txt` and `captions.json`, which names the
model of each); here each is copied next to its image in the dataset, never over an existing caption unless the
job asked for `caption_overwrite`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lorarun.runner.console import err_console

CAPTIONS_DIR = "captions"
RECORD_FILE = "captions.json"


@dataclass(frozen=True)
class CaptionsPlaced:
    model: str
    written: int
    kept: int
    dataset: Path


def place_captions(spec) -> CaptionsPlaced | None:
    if spec.dataset.captions == "given":
        return None
    home = spec.output_dir / CAPTIONS_DIR
    try:
        record = json.loads((home / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # nothing was captioned (every image had a caption), or the job stopped before
    dataset = spec.dataset_dir.resolve()
    written = kept = 0
    for entry in record.get("captions", {}).values():
        rel = str(entry.get("caption_file", ""))
        source, target = (home / rel).resolve(), (dataset / rel).resolve()
        if not rel or not target.is_relative_to(dataset) or not source.is_relative_to(home.resolve()):
            continue  # a path that would leave the folders: never written
        if not source.is_file():
            continue
        if target.exists() and not spec.dataset.caption_overwrite:
            kept += 1
            continue
        target.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
        written += 1
    placed = CaptionsPlaced(str(record.get("repo") or record.get("model") or "?"), written, kept, dataset)
    err_console.print(
        f"captions: {written} written beside the images in {dataset}"
        + (f", {kept} existing kept" if kept else "")
        + f" (model {placed.model}; record in {home / RECORD_FILE})",
        highlight=False,
    )
    return placed
