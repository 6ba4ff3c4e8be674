"""Issue 23.9, engine side: the report charts every optimizer step, although progress events are time-based (an
82-step run reported 5 times charted 5 points), and the time is split into load, caching, steps, sampling, saving."""

from __future__ import annotations

import subprocess

import pytest

torch = pytest.importorskip("torch")

from lorarun.runner.run.engine_phases import engine_phases  # noqa: E402
from lorarun.runner.run.report import loss_points  # noqa: E402

from .engine_helpers import engine_cmd, engine_config, engine_env, read_events, write_config  # noqa: E402

pytestmark = pytest.mark.slow  # runs the engine: scheduled with the long tests (tests/conftest.py)


def test_step_events_carry_every_step_loss_and_the_phases_add_up(tmp_path, dataset, asset_cache):
    cfg = engine_config(
        tmp_path,
        dataset,
        "sd15",
        training={"gradient_accumulation_steps": 2, "max_train_epochs": 3},  # 2 optimizer steps an epoch
    )
    # one step event a minute: this short run reports only its first and its last step
    result = subprocess.run(
        engine_cmd(write_config(tmp_path, cfg), interval=600.0),
        capture_output=True,
        text=True,
        timeout=300,
        env=engine_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(tmp_path / "out")
    total = next(e["total_steps"] for e in events if e["event"] == "started")
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) < total  # the reports are few...
    assert sum(len(e["losses"]) for e in steps) == total  # ...but they carry each step's loss
    points = loss_points(events)
    assert [p.step for p in points] == list(range(1, total + 1))
    assert all(p.loss > 0 for p in points)
    # the first report covers step 1 alone: its mean is that step's loss
    assert steps[0]["losses"] == [pytest.approx(steps[0]["loss"], rel=1e-5)]

    assert all(isinstance(e.get("save_seconds"), float) for e in events if e["event"] == "checkpoint")
    phases = engine_phases(events)
    assert {"load", "caching", "training steps", "sampling", "saving"} <= set(phases)
    started = next(e["t"] for e in events if e["event"] == "started")
    wall = events[-1]["t"] - started
    assert 0 < sum(phases.values()) <= wall + 0.5
