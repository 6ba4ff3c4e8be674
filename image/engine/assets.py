"""Local diffusers config folders for single-file checkpoints, so `from_single_file(..., config=<folder>)` needs no
hub: the model configs we ship (`image/assets/configs/<variant>/`, the published SD1.5 / SD2-v / SDXL-base configs)
plus tokenizer folders generated from the shipped CLIP BPE file. Built once into the asset cache (the Docker image
bakes them with `lorarun-engine prepare-assets`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lorarun.image.engine.tokenizer import ASSETS, default_cache_dir, write_tokenizer_files

CONFIGS = ASSETS / "configs"
# tokenizer folder → pad token: SD1.5 and SDXL's first tokenizer pad with <|endoftext|>; SD2 and SDXL's second
# (OpenCLIP) tokenizer pad with "!".
TOKENIZERS = {
    "sd15": {"tokenizer": "<|endoftext|>"},
    "sd2-v": {"tokenizer": "!"},
    "sdxl": {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"},
}


def variant_for(family: str, v2: bool = False, v_pred: bool = False) -> str:
    if family == "sdxl":
        return "sdxl"
    return "sd2-v" if v2 else "sd15"


def pipeline_config_dir(family: str, *, v2: bool = False, v_pred: bool = False, cache_dir: Path | None = None) -> Path:
    variant = variant_for(family, v2, v_pred)
    folder = (cache_dir or default_cache_dir()) / "pipelines" / variant
    if (folder / "model_index.json").exists():
        return folder
    staging = folder.with_name(f".{variant}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(CONFIGS / variant, staging)
    for sub, pad in TOKENIZERS[variant].items():
        write_tokenizer_files(staging / sub, pad_token=pad)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, folder)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def prepare_all(cache_dir: Path | None = None) -> list[Path]:
    """Every folder the engine may need offline (for the Docker build)."""
    from lorarun.image.engine.tokenizer import tokenizer_dir

    folders = [tokenizer_dir("clip_l", cache_dir), tokenizer_dir("clip_g", cache_dir)]
    for family, v2 in (("sd15", False), ("sd15", True), ("sdxl", False)):
        folders.append(pipeline_config_dir(family, v2=v2, cache_dir=cache_dir))
    return folders
