"""Resume state under `<work_dir>/state/`: LoRA weights, optimizer, scheduler, per-rank RNG, step/epoch.

Layout: `state/step-00000012/` (complete folders only: written as `.tmp` and renamed) and `state/latest.json`
naming the newest one. A state whose config fingerprint differs from the current run is not used (the run starts
fresh and says so), so changing hyper-parameters never silently continues an unrelated run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import torch
from safetensors.torch import load_file, save_file

from lorarun.image.hold_points import hold

LATEST = "latest.json"


@dataclass(frozen=True)
class Progress:
    global_step: int  # optimizer steps done
    epoch: int  # current epoch (0-based)
    batch_in_epoch: int  # micro-batches of `epoch` already trained on this rank
    fingerprint: str


def _location_free(value):
    """Absolute paths by their last part: a job resumed on another machine (an interrupted rental, runner/run/
    interruption.py) has the same files under another root, and must still count as the same run."""
    if isinstance(value, dict):
        return {k: _location_free(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_location_free(v) for v in value]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value.startswith("/"):
        return PurePosixPath(value).name
    return value


def fingerprint(cfg, world_size: int) -> str:
    """What must match for a resume to be the same run: model, data, training settings and the process count —
    not where the files sit (the controller lays out every machine the same way below its own root)."""
    body = json.dumps(
        _location_free(
            {
                "model": asdict(cfg.model),
                "dataset": asdict(cfg.dataset),
                "training": asdict(cfg.training),
                "world": world_size,
            }
        ),
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _rng_state(generator: torch.Generator) -> dict:
    import random

    state = {"generator": generator.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def stage_rank(state_root: Path, step: int, rank: int, generator: torch.Generator) -> Path:
    """Every rank writes its own RNG state into the staging folder (before the main rank finalises it)."""
    staging = state_root / f"step-{step:08d}.tmp"
    staging.mkdir(parents=True, exist_ok=True)
    torch.save(_rng_state(generator), staging / f"rng-rank{rank}.pt")
    return staging


def finalise(state_root: Path, progress: Progress, lora: dict[str, torch.Tensor], optimizer, scheduler) -> Path:
    """Main rank: write weights/optimizer/scheduler/progress, publish the folder, drop older states."""
    staging = state_root / f"step-{progress.global_step:08d}.tmp"
    staging.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in lora.items()}, str(staging / "lora.safetensors"))
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    (staging / "progress.json").write_text(json.dumps(asdict(progress)), encoding="utf-8")
    final = state_root / f"step-{progress.global_step:08d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    tmp = state_root / f".{LATEST}.tmp"
    tmp.write_text(json.dumps({"dir": final.name}), encoding="utf-8")
    os.replace(tmp, state_root / LATEST)
    for old in state_root.iterdir():
        if old.is_dir() and old.name != final.name:
            shutil.rmtree(old, ignore_errors=True)
    hold(f"engine:state:{progress.global_step}")  # tests only (image/hold_points.py): this step's state published
    return final


def find_latest(state_root: Path) -> tuple[Path, Progress] | None:
    try:
        folder = state_root / json.loads((state_root / LATEST).read_text(encoding="utf-8"))["dir"]
        progress = Progress(**json.loads((folder / "progress.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder, progress


def load(folder: Path, rank: int, optimizer, scheduler, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Restore optimizer, scheduler and this rank's RNG; return the LoRA weights for the caller to load."""
    import random

    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", map_location="cpu", weights_only=False))
    rng_file = folder / f"rng-rank{rank}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, map_location="cpu", weights_only=False)
        generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return load_file(str(folder / "lora.safetensors"))
