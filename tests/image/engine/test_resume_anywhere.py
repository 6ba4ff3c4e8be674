"""Resume anywhere: a run killed on one machine continues on another — other paths, no caches, only what the
controller kept home (the newest resume state, the events, the last checkpoint: runner/run/resume_state.py) — and
ends with the uninterrupted run's LoRA, bit for bit.

The two "machines" are two folders on this one; the controller's own pull and push move the files over its local
transport, the way they move them over SSH from an interrupted rental to the next."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import pytest

torch = pytest.importorskip("torch")

from lorarun.runner.remote.layout import RemoteLayout  # noqa: E402
from lorarun.runner.remote.local import LocalTransport  # noqa: E402
from lorarun.runner.run import resume_state  # noqa: E402

from .engine_helpers import engine_cmd, engine_config, engine_env, read_events, run_engine, write_config  # noqa: E402
from .test_resume import NO_GRID, TRAINING, _tensors, _wait_for  # noqa: E402

pytestmark = pytest.mark.slow  # runs the engine: scheduled with the long tests (tests/conftest.py)


def _machine(root, dataset):
    """A job laid out as the controller lays it out on any machine: <root>/<job>/{dataset,output,work}."""
    layout = RemoteLayout(root=str(root / "job"), python="")
    data = root / "job" / "dataset"
    shutil.copytree(dataset, data)
    cfg = engine_config(root / "job", data, training=TRAINING, sample=NO_GRID)
    cfg["output_dir"], cfg["work_dir"] = layout.output, layout.work
    return layout, write_config(root / "job", cfg)


def test_a_run_killed_on_one_machine_ends_bit_identical_on_another(tmp_path, dataset, uninterrupted_run):
    home = tmp_path / "laptop"
    home.mkdir()
    first, first_config = _machine(tmp_path / "machine-a", dataset)
    proc = subprocess.Popen(
        engine_cmd(first_config), env=engine_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    events = _wait_for(
        proc,
        tmp_path / "machine-a" / "job" / "output",
        lambda ev: any(e["event"] == "step" and e["step"] >= 7 for e in ev),
    )
    proc.send_signal(signal.SIGKILL)  # the provider took the machine back: nothing more is written
    proc.wait()
    saved = max(e["step"] for e in events if e["event"] == "checkpoint")
    assert saved >= 6

    # What the monitor does each round: the newest state home, the events and checkpoints home.
    transport = LocalTransport(tmp_path)
    assert resume_state.pull_newest(transport, first, home) == saved
    assert resume_state.pull_newest(transport, first, home) is None  # already home: nothing moves again
    out_home = home / "out"
    out_home.mkdir()
    shutil.copy(f"{first.events}", home / "events.jsonl")
    for ckpt in (tmp_path / "machine-a" / "job" / "output").glob("*.safetensors"):
        shutil.copy(ckpt, out_home / ckpt.name)
    shutil.rmtree(tmp_path / "machine-a")  # the interrupted machine and its disk are gone

    second, second_config = _machine(tmp_path / "machine-b", dataset)
    assert resume_state.push(transport, second, home, out_home) == saved
    last = resume_state.last_checkpoint(home / "events.jsonl", saved)
    assert last and (tmp_path / "machine-b" / "job" / "output" / last).is_file()
    assert not (tmp_path / "machine-b" / "job" / "work" / "cache").exists()  # caches are made again

    result = run_engine(second_config)
    assert result.returncode == 0, result.stderr[-2000:]
    events = read_events(tmp_path / "machine-b" / "job" / "output")
    restart = max(i for i, e in enumerate(events) if e["event"] == "started")
    assert events[restart]["resume_from_step"] == saved  # the state was accepted: same run, other paths
    steps = [e["step"] for e in events[restart:] if e["event"] == "step"]
    assert steps[0] == saved + 1 and steps[-1] == events[restart]["total_steps"]
    ours, ref = _tensors(second.output + "/tiny.safetensors"), _tensors(uninterrupted_run / "tiny.safetensors")
    assert ours.keys() == ref.keys()
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key
    assert json.loads((home / "resume" / "latest.json").read_text())["dir"] == f"step-{saved:08d}"
