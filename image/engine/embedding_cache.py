"""The on-disk cache the engine keeps under `<work_dir>/cache/`: one safetensors file per input, named by a hash of
everything the result depends on (the model, the settings, the exact input), so a resumed or repeated run skips the
encoders entirely. SD's latents and text embeddings (data.py) and Flux's text conditioning (flux/text.py) all go
through it; each says only how to encode and which tensors a file holds.

Files are written to a `.tmp` beside the final name and renamed, so a run killed mid-write leaves no half file that
a later run would read as done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

Tensors = dict[str, torch.Tensor]


def cache_key(*parts) -> str:
    """The file name's stem: a hash of every part the cached result depends on."""
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:24]


def save_atomic(tensors: Tensors, file: Path) -> None:
    tmp = file.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(file)


def cache_per_caption(
    captions: Sequence[str],
    cache_dir: Path,
    key: Callable[[str], str],
    encode: Callable[[list[str]], list[Tensors]],
    *,
    write: bool,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Tensors]:
    """One entry per distinct caption: read from `cache_dir` where a previous run stored it, else encoded in
    batches of `batch_size` (`encode(captions)` → one dict of CPU tensors each, batch dim 1) and stored.
    `write=False` (non-main ranks) only reads, after the main rank has written everything.
    `progress(done, total)` after each batch encoded (the controller shows "caching captions N/M")."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Tensors] = {}
    todo: list[tuple[str, Path]] = []
    for caption in sorted(set(captions)):
        file = cache_dir / f"{key(caption)}.safetensors"
        if file.exists():
            out[caption] = load_file(str(file))
        else:
            todo.append((caption, file))
    if todo and not write:
        raise RuntimeError("text cache incomplete on a non-main rank")
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        with torch.no_grad():
            encoded = encode([caption for caption, _ in chunk])
        for (caption, file), tensors in zip(chunk, encoded):
            save_atomic(tensors, file)
            out[caption] = tensors
        if progress:
            progress(min(start + batch_size, len(todo)), len(todo))
    return out
