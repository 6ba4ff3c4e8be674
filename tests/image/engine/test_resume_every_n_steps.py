"""`training.save_every_n_steps`: a checkpoint and a resume state every N optimizer steps (kohya's option), so an
interrupted rental loses at most N steps. A run killed right after the state of a mid-epoch step N is published
continues from step N and ends with the weights of an uninterrupted run that never saved by steps.

The kill lands at a named point (image/hold_points.py `engine:state:<N>`), never by racing the step events."""

from __future__ import annotations

import signal
import subprocess

import pytest
from support.holds import HoldPoints

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

# 4 epochs of 3 steps: step 4 is mid-epoch 2 (epoch 1 ends at step 3).
BY_STEPS = {**RESUME_TRAINING, "save_every_n_steps": 2}  # the uninterrupted run (conftest.py) never saves by steps


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_killed_after_a_step_save_resumes_there_bit_identically(tmp_path, dataset, uninterrupted_run):
    run = tmp_path / "run"
    run.mkdir()
    config = write_config(run, engine_config(run, dataset, training=BY_STEPS, sample=NO_GRID))
    holds = HoldPoints(tmp_path / "holds")
    proc = subprocess.Popen(
        engine_cmd(config),
        env={**engine_env(), **holds.env("engine:state:4")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        holds.wait_reached("engine:state:4", proc)
        proc.send_signal(signal.SIGKILL)  # the machine taken back right after step 4's state was published
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = run / "out"
    before = read_events(out)
    assert [e["step"] for e in before if e["event"] == "checkpoint"] == [2, 3, 4]
    assert max(e["step"] for e in before if e["event"] == "step") == 4

    result = run_engine(config)
    assert result.returncode == 0, result.stderr[-2000:]
    events = read_events(out)
    restart = max(i for i, e in enumerate(events) if e["event"] == "started")
    after = events[restart:]
    assert after[0]["resume_from_step"] == 4  # mid-epoch: epoch 2, its second batch next
    steps = [e["step"] for e in after if e["event"] == "step"]
    assert steps[0] == 5 and steps[-1] == 12 == after[0]["total_steps"]
    assert after[-1]["event"] == "finished"
    # Step files every 2 steps (kohya's `-stepNNNNNNNN` names), except where the epoch's own file (steps 3, 6, 9)
    # or the final file (12) holds the same weights.
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "tiny-000001.safetensors",
        "tiny-000002.safetensors",
        "tiny-000003.safetensors",
        "tiny-step00000002.safetensors",
        "tiny-step00000004.safetensors",
        "tiny-step00000008.safetensors",
        "tiny-step00000010.safetensors",
        "tiny.safetensors",
    ]
    # Bit-identical to the run that never stopped (and never saved by steps): saving perturbs nothing.
    ours, theirs = _tensors(out / "tiny.safetensors"), _tensors(uninterrupted_run / "tiny.safetensors")
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    mid = _tensors(out / "tiny-step00000004.safetensors")
    assert mid.keys() == theirs.keys() and any(not torch.equal(mid[k], theirs[k]) for k in theirs)
