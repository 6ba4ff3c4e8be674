"""Helpers for the engine tests: engine config writer, the engine as a process, reading events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def engine_config(
    tmp_path: Path,
    train_dir: Path,
    family: str = "sd15",
    *,
    output_name: str = "tiny",
    model: dict | None = None,
    dataset: dict | None = None,
    training: dict | None = None,
    sample: dict | None = None,
    **top,
) -> dict:
    cfg = {
        "job_id": "t1",
        "output_dir": str(tmp_path / "out"),
        "output_name": output_name,
        "work_dir": str(tmp_path / "work"),
        "model": {"family": family, "base": f"builtin:tiny-{family}", **(model or {})},
        "dataset": {
            "train_data_dir": str(train_dir),
            "resolution": 64,
            "min_bucket_reso": 32,
            "max_bucket_reso": 128,
            "bucket_reso_steps": 32,
            **(dataset or {}),
        },
        "training": {
            "max_train_epochs": 2,
            "batch_size": 2,
            "save_every_n_epochs": 1,
            "network_dim": 4,
            "network_alpha": 2,
            "learning_rate": 1e-2,
            "text_encoder_lr": 1e-2,
            "seed": 7,
            **(training or {}),
        },
        "sample": {"prompts": [], "steps": 2, "grid_strengths": [0.0, 1.0], "grid_seeds": [1], **(sample or {})},
        **top,
    }
    return cfg


# The resume tests' job: 4 epochs of 3 steps on the session dataset, a checkpoint each epoch, the text encoder frozen,
# no grid. Every resumed run of it must end bit-identical to one uninterrupted run (conftest.py `uninterrupted_run`).
RESUME_TRAINING = {"max_train_epochs": 4, "save_every_n_epochs": 1, "text_encoder_lr": 0}
NO_GRID = {"grid_strengths": []}


def write_config(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "engine_config.json"
    path.write_text(json.dumps(cfg))
    return path


def engine_cmd(config: Path, interval: float = 0.0) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lorarun.image.engine",
        "train",
        "--config",
        str(config),
        "--step-event-interval",
        str(interval),
    ]


def engine_env() -> dict:
    # One thread: the tiny models gain nothing from more, and a busy CI box makes OpenMP spin-waits very slow.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def run_engine(config: Path, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    env = engine_env()
    return subprocess.run(engine_cmd(config), capture_output=True, text=True, timeout=timeout, env=env, **kw)


def read_events(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
