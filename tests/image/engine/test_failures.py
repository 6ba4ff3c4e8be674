"""Failures mid-run end cleanly: an OOM keeps the last checkpoint and says what to change; a crash is a `failed`
event with exit code 1; the memory check warns before training."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from .engine_helpers import engine_config, read_events  # noqa: E402

pytestmark = pytest.mark.slow  # runs the engine: scheduled with the long tests (tests/conftest.py)


def _cfg(tmp_path, dataset, **training):
    from lorarun.image.engine_config import EngineConfig

    raw = engine_config(
        tmp_path,
        dataset,
        training={"max_train_epochs": 3, "text_encoder_lr": 0, **training},
        sample={"grid_strengths": []},
    )
    cfg = EngineConfig.from_dict(raw)
    cfg.validate()
    return cfg


def _fail_at(monkeypatch, call: int, exc: Exception):
    from lorarun.image.engine import train as train_module

    real = train_module.Trainer.loss
    calls = {"n": 0}

    def loss(self, batch):
        calls["n"] += 1
        if calls["n"] == call:
            raise exc
        return real(self, batch)

    monkeypatch.setattr(train_module.Trainer, "loss", loss)


def test_oom_mid_run_keeps_the_last_checkpoint_and_says_what_to_change(tmp_path, dataset, monkeypatch, capsys):
    from lorarun.image.engine.train import train

    _fail_at(monkeypatch, 5, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert train(_cfg(tmp_path, dataset), step_event_interval_s=0) == 1
    events = read_events(tmp_path / "out")
    failed = events[-1]
    assert failed["event"] == "failed"
    assert failed["reason"].startswith("out of GPU memory at step 5")
    assert failed["reason"].endswith("lower batch_size / enable gradient_checkpointing")
    assert [e["path"] for e in events if e["event"] == "checkpoint"] == ["tiny-000001.safetensors"]
    assert (tmp_path / "out" / "tiny-000001.safetensors").exists()
    assert "out of GPU memory" in capsys.readouterr().err


def test_crash_is_a_failed_event_with_one_line(tmp_path, dataset, monkeypatch):
    from lorarun.image.engine.train import train

    _fail_at(monkeypatch, 2, RuntimeError("something broke\nsecond line"))
    assert train(_cfg(tmp_path, dataset), step_event_interval_s=0) == 1
    failed = read_events(tmp_path / "out")[-1]
    assert failed == {**failed, "event": "failed", "reason": "RuntimeError: something broke second line"}


def test_memory_warning_names_the_fix():
    from lorarun.image.engine.memory_check import memory_warning
    from lorarun.image.engine_config import EngineConfig

    cfg = EngineConfig.from_dict(
        {
            "job_id": "j",
            "output_dir": "/o",
            "output_name": "n",
            "model": {"family": "sdxl", "base": "stabilityai/stable-diffusion-xl-base-1.0"},
            "dataset": {"resolution": 1024},
            "training": {"batch_size": 8},
        }
    )
    tip = memory_warning(cfg, 24.0)
    assert tip and "batch_size" in tip
    assert memory_warning(cfg, 500.0) is None
