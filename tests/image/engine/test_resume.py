"""Resume after SIGKILL, clean stop on SIGTERM: the run continues from the last saved step, and a resumed run ends
with the same LoRA as an uninterrupted one (same config, same seed)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

torch = pytest.importorskip("torch")

from .engine_helpers import (  # noqa: E402
    NO_GRID,
    RESUME_TRAINING,
    engine_cmd,
    engine_config,
    engine_env,
    read_events,
    run_engine,
    write_config,
)

pytestmark = pytest.mark.slow  # runs the engine: scheduled with the long tests (tests/conftest.py)

TRAINING = RESUME_TRAINING


def _wait_for(proc, out, predicate, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = read_events(out)
        if predicate(events):
            return events
        if proc.poll() is not None:
            raise AssertionError(f"engine exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out waiting for the engine")


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_sigkill_then_restart_continues_from_last_checkpoint(tmp_path, dataset, uninterrupted_run):
    config = write_config(tmp_path, engine_config(tmp_path, dataset, training=TRAINING, sample=NO_GRID))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        engine_cmd(config), env=engine_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    # kill in epoch 3, after the epoch-2 checkpoint (step 6)
    events = _wait_for(proc, out, lambda ev: any(e["event"] == "step" and e["step"] >= 7 for e in ev))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = max(e["step"] for e in events if e["event"] == "checkpoint")
    assert saved >= 6

    result = run_engine(config)
    assert result.returncode == 0, result.stderr[-2000:]
    events = read_events(out)
    restart = max(i for i, e in enumerate(events) if e["event"] == "started")
    after = events[restart:]
    assert after[0]["resume_from_step"] == saved
    steps = [e["step"] for e in after if e["event"] == "step"]
    assert steps[0] == saved + 1 and steps[-1] == 12 == after[0]["total_steps"]
    assert after[-1]["event"] == "finished"
    names = sorted(p.name for p in out.glob("*.safetensors"))
    assert names == [
        "tiny-000001.safetensors",
        "tiny-000002.safetensors",
        "tiny-000003.safetensors",
        "tiny.safetensors",
    ]
    # Reproducible: the resumed run ends with the uninterrupted run's weights.
    ours, ref = _tensors(out / "tiny.safetensors"), _tensors(uninterrupted_run / "tiny.safetensors")
    assert ours.keys() == ref.keys()
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key


def test_sigterm_saves_state_and_stops_cleanly_then_resumes_mid_epoch(tmp_path, dataset, uninterrupted_run):
    config = write_config(tmp_path, engine_config(tmp_path, dataset, training=TRAINING, sample=NO_GRID))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        engine_cmd(config), env=engine_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _wait_for(proc, out, lambda ev: any(e["event"] == "step" and e["step"] >= 4 for e in ev))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    events = read_events(out)
    assert events[-1]["event"] == "stopped"
    stopped_at = events[-1]["step"]
    last_ckpt = [e for e in events if e["event"] == "checkpoint"][-1]
    if stopped_at % 3:  # stopped mid-epoch: a step checkpoint was written for it (kohya's step naming)
        assert last_ckpt["path"] == f"tiny-step{stopped_at:08d}.safetensors"
    assert last_ckpt["step"] == stopped_at
    assert (out / last_ckpt["path"]).exists()

    result = run_engine(config)
    assert result.returncode == 0, result.stderr[-2000:]
    events = read_events(out)
    restart = max(i for i, e in enumerate(events) if e["event"] == "started")
    steps = [e["step"] for e in events[restart:] if e["event"] == "step"]
    assert steps[0] == stopped_at + 1 and steps[-1] == 12
    ours, ref = _tensors(out / "tiny.safetensors"), _tensors(uninterrupted_run / "tiny.safetensors")
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key


def test_restart_after_finish_does_not_retrain(tmp_path, dataset, asset_cache):
    config = write_config(
        tmp_path,
        engine_config(tmp_path, dataset, training={"max_train_epochs": 1, "text_encoder_lr": 0}, sample=NO_GRID),
    )
    assert run_engine(config).returncode == 0
    before = (tmp_path / "out" / "tiny.safetensors").read_bytes()
    assert run_engine(config).returncode == 0
    events = read_events(tmp_path / "out")
    assert events[-1]["event"] == "finished" and events[-1].get("resumed") is True
    assert (tmp_path / "out" / "tiny.safetensors").read_bytes() == before
