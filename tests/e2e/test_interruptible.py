"""Interruptible rentals end to end: the provider takes the machine back mid-training (Vast outbid, RunPod spot
exit) and the job finishes on another rental from the last checkpoint home, with the same step count.

The interruption is injected at a named point, never by racing the engine: the engine on the instance is held once it
has published the resume state of a (seeded) random checkpoint step (hold point engine:state:<N>), the monitor
brings that state home, then the fake provider marks the instance stopped and ends its container (sshd and
processes), as the real providers do."""

from __future__ import annotations

import json
import random

import pytest
from support.cloud import tiny_job
from support.interrupter import Interrupter, patch_monitor
from support.shared_clock import share_clock

from lorarun.runner.cli.app import main
from lorarun.runner.run import connect
from lorarun.runner.run.interruption import DETECT_WITHIN_S, read_log
from lorarun.runner.state import JobStore
from lorarun.sshlink.session import RetryPolicy

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

EPOCHS = 10  # 2 steps an epoch, a checkpoint (and resume state) each epoch


@pytest.fixture(autouse=True)
def _quick_reconnects(monkeypatch):
    """The link to a taken-back instance drops for good; the session's reconnect attempts (as many as in production)
    wait 0.2-1 s apart instead of 1+2+4+8+16 s, which was 31 s of each interruption's wall time. The reconnect is
    not what is under test here (tests/faults/test_interruptions.py shortens it the same way)."""
    monkeypatch.setattr(connect, "SSH_RETRY", RetryPolicy(attempts=6, base_delay=0.2, factor=2.0, max_delay=1.0))


def _events(job_dir):
    return [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def _run(cloud, tmp_path, monkeypatch, steps):
    job = tiny_job(tmp_path, cloud.name, epochs=EPOCHS, extra_resources="  interruptible: prefer")
    interrupter = Interrupter(cloud, tmp_path, steps)
    patch_monitor(monkeypatch, interrupter)
    clock = share_clock(monkeypatch, cloud.fake)
    code = main(["submit", str(job), "--yes"])
    return code, interrupter, clock


def _names(path: str, instance_id: str) -> bool:
    return instance_id in path.rstrip("/").split("/")


def _assert_resumed(cloud, tmp_path, interrupter, count, clock):
    (state,) = JobStore().all()
    assert state.phase == "done" and state.instance_destroyed, state.message
    job_dir = JobStore().job_dir(state.job_id)
    log = read_log(job_dir)
    assert [e["instance_id"] for e in log] == interrupter.done and len(log) == count
    # Every rental destroyed and confirmed: the interrupted ones and the last one.
    assert cloud.instance_ids() == []
    for iid in [*interrupter.done, state.instance_id]:
        assert not cloud.host.alive(iid)
    assert len(set(interrupter.done + [state.instance_id])) == count + 1
    # Noticed within a minute of the fake marking it stopped, on the clock the controller and the fake share
    # (tests/support/shared_clock.py: the controller's waits count in full, a loaded test machine changes nothing).
    # The look that noticed it is the first request about that instance after the mark (GET of the Vast instance,
    # of the RunPod pod), and the controller's record of the interruption comes after that look.
    for entry in log:
        iid = entry["instance_id"]
        marked = cloud.fake.interrupted[iid]
        looks = [r.at for r in cloud.fake.requests if r.method == "GET" and r.at >= marked and _names(r.path, iid)]
        assert looks, f"nobody asked the provider about {iid} after it was taken back"
        assert marked <= looks[0] <= entry["seen_at"]
        assert entry["seen_at"] - marked <= DETECT_WITHIN_S, (entry["seen_at"] - marked, clock.skipped)
    # Each rental after an interruption resumed from the step whose state was home, and the run ended on the
    # uninterrupted run's step count.
    events = _events(job_dir)
    starts = [e for e in events if e["event"] == "started"]
    assert len(starts) == count + 1
    total = starts[0]["total_steps"]
    for entry, start in zip(log, starts[1:]):
        assert start["resume_from_step"] == entry["step"] > 0
        assert start["total_steps"] == total
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert max(steps) == total
    assert [e["event"] for e in events if e["event"] in ("finished", "failed")] == ["finished"]
    out = tmp_path / "out"
    assert (out / "e2e_lora.safetensors").is_file()
    # Every epoch's checkpoint is home: those of the interrupted rentals and those made after the resume.
    assert sorted(p.name for p in out.glob("e2e_lora-*.safetensors")) == [
        f"e2e_lora-{n:06d}.safetensors" for n in range(1, EPOCHS)
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["outcome"] == "finished" and report["verified"] is True, report["files"]
    assert [e["instance_id"] for e in report["interruptions"]] == interrupter.done
    # The interruption rate learns from these rentals: `count` taken back, the last one ran to the end.
    history = json.loads((JobStore().home / "interruptions.json").read_text())[cloud.name]
    assert history["interruptions"] == count and history["rentals"] == count + 1


@pytest.mark.parametrize("seed", [18])
def test_interrupted_once_finishes_on_a_second_rental(cloud, tmp_path, monkeypatch, capsys, seed):
    at = 2 * random.Random(f"{cloud.name}-{seed}").randint(1, EPOCHS - 1)  # a checkpoint step (2 steps an epoch)
    code, interrupter, clock = _run(cloud, tmp_path, monkeypatch, [at])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "took instance" in err and "resuming from step" in err
    _assert_resumed(cloud, tmp_path, interrupter, 1, clock)


def test_interrupted_twice_finishes_on_a_third_rental(vast_cloud, tmp_path, monkeypatch, capsys):
    code, interrupter, clock = _run(vast_cloud, tmp_path, monkeypatch, [4, 12])
    err = capsys.readouterr().err
    assert code == 0, err
    _assert_resumed(vast_cloud, tmp_path, interrupter, 2, clock)
