"""The test-only step pacing (image/step_pacing.py) in the real engine: with `LORARUN_TEST_STEP_SECONDS` set, every
optimizer step takes at least that long, the run still writes its LoRA, and the `step_pacing` event says how much
of the paced time was real work. bench/batch_wall.py relies on all three."""

from __future__ import annotations

import subprocess

import pytest

torch = pytest.importorskip("torch")

from lorarun.image.step_pacing import PACE_ENV  # noqa: E402

from .engine_helpers import engine_cmd, engine_config, engine_env, read_events, write_config  # noqa: E402

pytestmark = pytest.mark.slow  # runs the engine: scheduled with the long tests (tests/conftest.py)

STEP_S = 0.6


def test_paced_engine_spaces_its_steps_and_still_writes_the_lora(tmp_path, dataset, asset_cache):
    cfg = engine_config(tmp_path, dataset, "sd15", training={"max_train_epochs": 2})
    result = subprocess.run(
        engine_cmd(write_config(tmp_path, cfg), interval=0.0),  # a step event after every step
        capture_output=True,
        text=True,
        timeout=300,
        env={**engine_env(), PACE_ENV: str(STEP_S)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(tmp_path / "out")
    total = next(e["total_steps"] for e in events if e["event"] == "started")
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, total + 1)) and total >= 3
    gaps = [b["t"] - a["t"] for a, b in zip(steps, steps[1:])]
    assert min(gaps) >= STEP_S - 0.01, gaps  # a lower bound the sleep guarantees (event times are rounded to ms)
    (pacing,) = [e for e in events if e["event"] == "step_pacing"]
    assert pacing["seconds"] == STEP_S and pacing["steps"] == total
    assert pacing["busy_s"] > 0 and pacing["busy_s"] + pacing["slept_s"] >= total * STEP_S - 0.01
    assert (tmp_path / "out" / "tiny.safetensors").stat().st_size > 0
    assert any(e["event"] == "finished" for e in events)
