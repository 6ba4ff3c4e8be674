"""#15.2: when the loss turns NaN/inf the engine stops with a clear `failed` event and writes no checkpoint of the
diverged weights (the laptop's verification also refuses any non-finite tensor, tests/runner/run/test_verify.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from .engine_helpers import engine_config, read_events  # noqa: E402

pytestmark = pytest.mark.slow  # runs the engine: scheduled with the long tests (tests/conftest.py)


def test_a_non_finite_loss_stops_the_run_with_a_failed_event(tmp_path, dataset, monkeypatch, capsys):
    from lorarun.image.engine import train as train_module
    from lorarun.image.engine_config import EngineConfig

    real = train_module.Trainer.loss
    calls = {"n": 0}

    def diverging_loss(self, batch):
        calls["n"] += 1
        loss = real(self, batch)
        return loss * float("nan") if calls["n"] >= 3 else loss  # what a learning rate far too high does

    monkeypatch.setattr(train_module.Trainer, "loss", diverging_loss)
    cfg = EngineConfig.from_dict(
        engine_config(
            tmp_path, dataset, training={"max_train_epochs": 3, "text_encoder_lr": 0}, sample={"grid_strengths": []}
        )
    )
    cfg.validate()
    assert train_module.train(cfg, step_event_interval_s=0) == 1
    events = read_events(tmp_path / "out")
    failed = events[-1]
    assert failed["event"] == "failed"
    assert "the loss became nan" in failed["reason"] and "lower the learning rate" in failed["reason"]
    steps = [e for e in events if e["event"] == "step"]
    assert steps and all(e["loss"] == e["loss"] for e in steps), "a NaN loss was reported as progress"
    assert f"by step {steps[-1]['step'] + 1} " in failed["reason"]  # stopped at the first step whose loss was NaN
    # Nothing after the loss turned NaN was saved, no final LoRA; what was saved before is finite.
    from lorarun.runner.run.verify import inspect_safetensors

    assert not (tmp_path / "out" / "tiny.safetensors").exists()
    for saved in (tmp_path / "out").glob("*.safetensors"):
        inspect_safetensors(saved)
    assert "the loss became nan" in capsys.readouterr().err
