"""Faults in a batch over several rentals (issue 19): a rental's failed start, a rental interrupted mid-training,
one job's engine crash, Ctrl-C, the controller killed mid-batch then `attach BATCH`. Each ends with 0 instances
alive, 0 outputs lost, and every job the fault did not hit finished. Fake Vast.ai API, real sshd instances, the
real engine on CPU; faults injected at named points (a monitor round that saw a step, a hold point)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from support.batch_jobs import batch_jobs
from support.engine_hold import hold_engines_until_stopping

from lorarun.runner.batch.record import BatchStore
from lorarun.runner.cli.app import main
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

jobs = batch_jobs  # the same tiny jobs as the end-to-end batch (tests/support/batch_jobs.py)


def the_batch():
    (record,) = BatchStore().all()
    return record, BatchStore().states(record)


def assert_nothing_billing(cloud, states):
    assert cloud.instance_ids() == [], "the fake still has an instance"
    every = {s.instance_id for s in JobStore().all() if s.instance_id}
    assert not any(cloud.host.alive(i) for i in every)
    assert all(s.is_final and (s.instance_destroyed or not s.instance_id) for s in JobStore().all())


def job_of(monitor: JobMonitor):
    return JobStore().load(monitor.local_events.parent.name)


def on_monitor_round(monkeypatch, hook):
    original = JobMonitor.poll

    def poll(self):
        events = original(self)
        hook(self)
        return events

    monkeypatch.setattr(JobMonitor, "poll", poll)


def test_a_rentals_failed_start_falls_back_and_every_job_finishes(vast_cloud, tmp_path, capsys, fault):
    fault.inject("one rental's instance never starts (OCI runtime failure)", "that rental rents the next offer")
    vast_cloud.fake.fail_next_starts = ["oci"]
    code = main(["submit", *jobs(tmp_path, vast_cloud.name, ["a", "b", "c", "d"]), "--rentals", "2", "--yes"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    record, states = the_batch()
    assert all(s.phase == "done" for s in states), [s.message for s in states]
    assert "failed to start" in err
    failed = {i for s in states for i in s.leaked_instance_ids}
    assert len(failed) == 1  # recorded, then destroyed and confirmed
    ran_on = {s.instance_id for s in states}
    assert len(ran_on) == 2 and not ran_on & failed  # two rentals did the work, neither the failed one
    assert_nothing_billing(vast_cloud, states)


def test_an_interrupted_rental_moves_its_unfinished_jobs(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject("a rental's instance vanishes mid-training", "its jobs move to a replacement rental, all finish")
    paths = jobs(tmp_path, vast_cloud.name, ["a", "b", "c", "d"])
    hit = {}

    def hook(monitor):
        state = job_of(monitor)
        if not hit and monitor.progress.step >= 1 and state.name in ("a", "b", "c", "d"):
            hit["job"], hit["instance"] = state.name, state.instance_id
            vast_cloud.fake.vanish(state.instance_id, run_on_destroy=True)

    on_monitor_round(monkeypatch, hook)
    code = main(["submit", *paths, "--rentals", "2", "--yes"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    record, states = the_batch()
    assert all(s.phase == "done" for s in states), [s.message for s in states]
    moved = record.job(hit["job"])
    assert len(moved.attempts) == 2  # a new attempt on a replacement rental
    first = JobStore().load(moved.attempts[0])
    fault.vanished_with(first.job_id)  # its unpulled checkpoints went with the instance; the job was re-made (done)
    # The loss is seen by whichever comes first: the provider's answer (vanished) or the SSH link (lost).
    assert first.phase == "failed" and ("vanished" in first.message or "lost" in first.message), first.message
    assert first.instance_id == hit["instance"]
    assert JobStore().load(moved.attempts[1]).instance_id != hit["instance"]
    assert "moved from rental" in err
    assert_nothing_billing(vast_cloud, states)


def test_one_engine_crash_fails_that_job_only(vast_cloud, tmp_path, monkeypatch, capsys, fault, holds):
    fault.inject("SIGKILL to one job's engine", "that job failed with its reason, the others finish, exit 1")
    paths = jobs(tmp_path, vast_cloud.name, ["crash", "b", "c", "d"], epochs={"crash": 60})
    # Every engine holds after its first step until the kill: 'crash' is still training when it is killed, however
    # fast the machine; the others then go on (engines started after the release do not hold).
    vast_cloud.host.extra_env.update(holds.env("engine:step"))
    killed = {}

    def hook(monitor):
        if not killed and job_of(monitor).name == "crash" and monitor.progress.step >= 1:
            pid = (monitor.agent_status() or {}).get("engine_pid")
            if pid:
                killed["pid"] = pid
                monitor.transport.run(f"kill -KILL {pid}", check=False)
                holds.release("engine:step")

    on_monitor_round(monkeypatch, hook)
    code = main(["submit", *paths, "--rentals", "2", "--yes"])
    captured = capsys.readouterr()
    assert code == 1, captured.err[-3000:]
    record, states = the_batch()
    by_name = {s.name: s for s in states}
    assert by_name["crash"].phase == "failed" and "training failed" in by_name["crash"].message
    assert len(record.job("crash").attempts) == 1  # its own failure: not moved to another rental
    assert all(by_name[n].phase == "done" for n in "bcd")
    assert all((tmp_path / n / "out" / f"{n}.safetensors").is_file() for n in "bcd")
    assert "1 of 4 jobs did not finish" in captured.err and "crash" in captured.err
    assert_nothing_billing(vast_cloud, states)


def test_ctrl_c_stops_every_rental(vast_cloud, tmp_path, monkeypatch, capsys, fault, holds):
    fault.inject("Ctrl-C mid-batch", "every rental stops, pulls what exists, is destroyed; exit 130")
    paths = jobs(tmp_path, vast_cloud.name, ["a", "b", "c", "d"], epochs=dict.fromkeys("abcd", 30))
    hold_engines_until_stopping(vast_cloud, monkeypatch, holds, "engine:step")  # still training when Ctrl-C lands
    pressed = {}

    def hook(monitor):
        if not pressed and monitor.progress.step >= 1:
            pressed["job"] = job_of(monitor).name
            os.kill(os.getpid(), signal.SIGINT)  # to the main thread, as a terminal's Ctrl-C

    on_monitor_round(monkeypatch, hook)
    code = main(["submit", *paths, "--rentals", "2", "--yes"])
    err = capsys.readouterr().err
    assert code == 130, err[-3000:]
    record, states = the_batch()
    assert all(s.is_final for s in states)
    assert any("not run" in s.message for s in states)  # the queued ones never started
    assert "stopped by the user" in err
    assert_nothing_billing(vast_cloud, states)


def test_controller_killed_mid_batch_then_attach_finishes_it(vast_cloud, tmp_path, capsys, fault, holds):
    fault.inject("SIGKILL to the batch's controller mid-training, then attach BATCH", "attach finishes every job")
    paths = jobs(tmp_path, vast_cloud.name, ["a", "b", "c"], epochs={"a": 2})
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
        holds.wait_reached("training", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    record, states = the_batch()
    assert not all(s.is_final for s in states)
    code = main(["attach", record.batch_id])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    record, states = the_batch()
    assert all(s.phase == "done" for s in states), [s.message for s in states]
    assert all((tmp_path / n / "out" / f"{n}.safetensors").is_file() for n in "abc")
    assert not list((JobStore().home / "claims").glob("*.json"))  # attach re-took each job's claim, then let go
    assert_nothing_billing(vast_cloud, states)
