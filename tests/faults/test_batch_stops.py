"""Stopping a whole batch (issue 19): the budget reached mid-batch, and `lorarun down BATCH` after its controller
died. Either way the jobs that were training save and come home, the queued ones are reported as not run, every
instance is destroyed and confirmed gone, and the exit code says not every job finished. Fake Vast.ai API, real
sshd instances, the real engine on CPU; faults injected at named points (a monitor round that saw a step, the
controller's `training` hold point, the engines' `engine:step` hold point)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support.batch_jobs import batch_jobs
from support.engine_hold import hold_engines_until_stopping

from lorarun.runner.batch.record import BatchStore
from lorarun.runner.cli.app import main
from lorarun.runner.price.budget import SpendTracker
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

LONG = 60  # epochs: the jobs a stop must cut are still training when it comes


def the_batch():
    (record,) = BatchStore().all()
    return record, {s.name: s for s in BatchStore().states(record)}


def assert_nothing_billing(cloud):
    assert cloud.instance_ids() == [], "the fake still has an instance"
    every = {s.instance_id for s in JobStore().all() if s.instance_id}
    assert not any(cloud.host.alive(i) for i in every)
    assert all(s.is_final and (s.instance_destroyed or not s.instance_id) for s in JobStore().all())


def saved(tmp_path, name) -> list[str]:
    return sorted(p.name for p in (tmp_path / name / "out").glob(f"{name}*.safetensors"))


def wait_until_training(names: tuple[str, ...], proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Until each named job has a step event at home: its engine has trained, so a stop has something to save.
    "phase monitor" is not enough: a job can be in it while its engine still loads the model, and a stop then has
    nothing to save (on a loaded machine that is where the second rental often is when the first one holds). The
    condition only ever turns true, so there is no window to miss."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = {s.name: s for s in JobStore().all()}
        waiting = [n for n in names if not (n in jobs and _has_a_step(JobStore().job_dir(jobs[n].job_id)))]
        if not waiting:
            return
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"{waiting} never trained"
        time.sleep(0.2)


def _has_a_step(job_dir) -> bool:
    events = job_dir / "events.jsonl"
    lines = events.read_text(errors="replace").splitlines() if events.is_file() else []
    return any(_event(line) == "step" for line in lines)


def _event(line: str) -> str | None:
    try:
        return json.loads(line).get("event")
    except ValueError:  # the last line may be half written
        return None


def queued_job(record, running: set[str]) -> str:
    """The job packed behind one of the long ones on the same rental."""
    (name,) = {j.name for j in record.jobs} - running
    return name


def test_budget_reached_mid_batch_stops_every_rental_cleanly(vast_cloud, tmp_path, monkeypatch, capsys, fault, holds):
    fault.inject(
        "the batch's spend reaches max_cost while two rentals train",
        "both save and come home, the queued job is not run, all destroyed, exit 1",
    )
    # Two long jobs open the two rentals, the short one waits behind one of them (longest first, runner/batch).
    paths = batch_jobs(tmp_path, vast_cloud.name, ["a", "b", "c"], epochs={"a": LONG, "b": LONG})
    # Once both rentals train, each machine turns out to have cost 60 dollars more than its clock says: 120 in
    # all is over the batch's 100, while each rental alone (60 + cents) stays under it, so it is the batch's own
    # budget that stops, not one pipeline's.
    extra = {"dollars": 0.0}
    real_spent = SpendTracker.spent
    monkeypatch.setattr(SpendTracker, "spent", lambda self: real_spent(self) + extra["dollars"])
    training: set[str] = set()
    real_poll = JobMonitor.poll

    def poll(self):
        events = real_poll(self)
        if self.progress.step >= 1:
            training.add(JobStore().load(self.local_events.parent.name).name)
            if training >= {"a", "b"}:
                extra["dollars"] = 60.0
        return events

    monkeypatch.setattr(JobMonitor, "poll", poll)
    # Each engine holds after its first step (busy: its lease is still renewed) until BOTH stops have been sent, so
    # neither can finish its 60 epochs before the budget's stop reaches it, however fast the machine (on an idle one
    # a tiny job's epochs take seconds). The pipeline sends SIGTERM, then polls for the engine to stop: the hold is
    # let go from that poll, once the second job is in it; the engines then see their stop flags and save.
    hold_engines_until_stopping(vast_cloud, monkeypatch, holds, "engine:step", stops=2)
    code = main(["submit", *paths, "--rentals", "2", "--yes", "--max-cost", "100"])
    err = capsys.readouterr().err
    assert code == 1, err[-3000:]  # not every job finished
    assert "budget reached" in err and "for the whole batch" in err
    assert "2 of 3 jobs did not finish" in err or "3 of 3 jobs did not finish" in err
    record, states = the_batch()
    for name in ("a", "b"):  # cut mid-training: saved, and what was saved came home
        assert states[name].phase == "stopped", (name, states[name].phase, states[name].message)
        assert "budget reached" in states[name].message
        assert saved(tmp_path, name), f"{name}: nothing came home"
        assert (tmp_path / name / "out" / "report.json").is_file()
    queued = queued_job(record, {"a", "b"})
    assert "not run" in states[queued].message and not saved(tmp_path, queued)
    assert_nothing_billing(vast_cloud)


def test_down_batch_after_its_controller_died_stops_all_of_it(vast_cloud, tmp_path, capsys, fault, holds):
    fault.inject("SIGKILL to the batch's controller mid-training, then down BATCH", "every rental stops and is gone")
    paths = batch_jobs(tmp_path, vast_cloud.name, ["a", "b", "c"], epochs={"a": LONG, "b": LONG})
    code = "import sys; from lorarun.runner.cli.app import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "submit", *paths, "--rentals", "2", "--yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **holds.env("training")},
        start_new_session=True,
    )
    try:
        holds.wait_reached("training", proc)  # one rental has a step home; wait for the other to train too
        wait_until_training(("a", "b"), proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    record, states = the_batch()
    assert sorted(s.phase for s in states.values()).count("monitor") == 2, {n: s.phase for n, s in states.items()}
    assert vast_cloud.instance_ids()  # the dead controller left both rentals billing

    code = main(["down", record.batch_id])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    record, states = the_batch()
    for name in ("a", "b"):
        assert states[name].phase == "stopped", (name, states[name].phase, states[name].message)
        assert saved(tmp_path, name), f"{name}: nothing came home"
    queued = queued_job(record, {"a", "b"})
    assert "not run" in states[queued].message and not saved(tmp_path, queued)
    assert_nothing_billing(vast_cloud)
    assert main(["status", record.batch_id]) == 0  # the batch reads as ended
    assert main(["down", record.batch_id]) == 0  # and a second down has nothing left to do


def test_down_batch_while_its_controller_runs_stops_all_of_it(vast_cloud, tmp_path, fault, holds):
    fault.inject(
        "`lorarun down BATCH` from another process while the batch's foreground submit runs",
        "the live controller stops every rental: saved outputs home, the queued job not run, all destroyed, exit 1",
    )
    paths = batch_jobs(tmp_path, vast_cloud.name, ["a", "b", "c"], epochs={"a": LONG, "b": LONG})
    code = "import sys; from lorarun.runner.cli.app import main; sys.exit(main(sys.argv[1:]))"
    submit = subprocess.Popen(
        [sys.executable, "-c", code, "submit", *paths, "--rentals", "2", "--yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **holds.env("training")},  # one rental's monitor holds once it saw a step
        start_new_session=True,
    )
    down = None
    try:
        holds.wait_reached("training", submit)
        wait_until_training(("a", "b"), submit)  # the other rental trains too (its own monitor is not held)
        record, states = the_batch()
        assert sorted(s.phase for s in states.values()).count("monitor") == 2, {n: s.phase for n, s in states.items()}
        down = subprocess.Popen(
            [sys.executable, "-c", code, "down", record.batch_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        # The live controller turns the batch's request into one per job; the held rental cannot take its own
        # before it is released, so the request is seen on disk (no window to miss) and then the hold let go.
        running = [states[n].job_id for n in ("a", "b")]
        deadline = time.monotonic() + 120
        while not any(JobStore().stop_request_path(j).exists() for j in running):
            assert down.poll() is None, down.stderr.read().decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the controller never passed the batch's stop on to its jobs"
            time.sleep(0.1)
        holds.release("training")
        submit_code = submit.wait(300)
        submit_err = submit.stderr.read().decode(errors="replace")
        down_code = down.wait(120)
        down_err = down.stderr.read().decode(errors="replace")
    finally:
        for proc in (submit, down):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    assert submit_code == 1, submit_err[-3000:]  # the batch's "not every job finished"
    assert "stopped by `lorarun down`" in submit_err
    assert down_code == 0, down_err[-3000:]
    assert f"asked the controller of {record.batch_id} to stop every job" in down_err
    record, states = the_batch()
    for name in ("a", "b"):  # cut mid-training: saved, and what was saved came home and is reported
        assert states[name].phase == "stopped", (name, states[name].phase, states[name].message)
        assert "stopped by `lorarun down`" in states[name].message
        assert saved(tmp_path, name), f"{name}: nothing came home"
        assert (tmp_path / name / "out" / "report.json").is_file()
    queued = queued_job(record, {"a", "b"})
    assert "not run" in states[queued].message and not saved(tmp_path, queued)
    assert_nothing_billing(vast_cloud)
    assert main(["down", record.batch_id]) == 0  # a second down has nothing left to do
