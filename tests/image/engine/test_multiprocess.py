"""Data-parallel training with two CPU processes through the engine's own launch path
(`lorarun-engine train --num-processes 2` → `accelerate launch --multi_gpu`, gloo on CPU): one writer of events and
files, half the steps per epoch, SIGTERM forwarded to both ranks (clean stop, exit 0), then a resumed finish."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")

from .engine_helpers import engine_config, engine_env, read_events, write_config


@pytest.mark.slow
def test_two_process_training_stops_on_sigterm_and_resumes(tmp_path, dataset, asset_cache):
    cfg = engine_config(
        tmp_path, dataset, training={"max_train_epochs": 3, "text_encoder_lr": 0}, sample={"grid_strengths": []}
    )
    config = write_config(tmp_path, cfg)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "lorarun.image.engine",
        "train",
        "--config",
        str(config),
        "--step-event-interval",
        "0",
        "--num-processes",
        "2",
    ]
    proc = subprocess.Popen(cmd, env=engine_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(e["event"] == "step" and e["step"] >= 3 for e in read_events(out)):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0
    events = read_events(out)
    (started,) = [e for e in events if e["event"] == "started"]  # only rank 0 writes events
    assert started["num_processes"] == 2
    # 3 one-bucket batches per epoch shared by 2 ranks → 2 steps per epoch (the shorter rank wraps around)
    assert started["steps_per_epoch"] == 2 and started["total_steps"] == 6
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == sorted(set(steps))  # no duplicates from a second writer
    assert events[-1]["event"] == "stopped"
    stopped_at = events[-1]["step"]

    result = subprocess.run(cmd, env=engine_env(), capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(out)
    restart = max(i for i, e in enumerate(events) if e["event"] == "started")
    assert events[restart]["resume_from_step"] == stopped_at
    resumed_steps = [e["step"] for e in events[restart:] if e["event"] == "step"]
    assert resumed_steps == list(range(stopped_at + 1, 7))
    assert events[-1]["event"] == "finished" and (out / "tiny.safetensors").exists()
