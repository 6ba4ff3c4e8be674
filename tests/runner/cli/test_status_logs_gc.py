"""status, logs and gc on the local provider (no network, no engine)."""

from __future__ import annotations

import json
import os
import socket
import time

from lorarun.runner.cli.app import main
from lorarun.runner.state import JobState, JobStore


def _job(store: JobStore, job_id: str, **changes) -> JobState:
    state = store.create(
        JobState(
            job_id=job_id, name=job_id.split("-")[0], job_file="/x/job.yaml", provider="local", output_dir="/x/out"
        )
    )
    state = store.advance(state, "monitor")
    return store.update(state, **changes)


def test_status_lists_jobs_and_flags_unconfirmed_instances(capsys):
    store = JobStore()
    _job(store, "alpha-000001", instance_id="lorarun-alpha-000001", instance_destroyed=True, phase="done")
    _job(store, "beta-000002", instance_id="i-77", instance_destroyed=False, phase="failed")
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "alpha-000001" in out and "(destroyed)" in out
    assert "i-77 (NOT confirmed destroyed)" in out


def test_status_and_logs_of_one_job(capsys):
    store = JobStore()
    state = _job(store, "gamma-000003")
    events = [
        {"t": time.time(), "event": "started", "total_steps": 10},
        {"t": time.time(), "event": "step", "step": 5, "total_steps": 10, "loss": 0.1234567},
    ]
    (store.job_dir(state.job_id) / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert main(["status", "gamma"]) == 0  # a unique prefix is enough
    out = capsys.readouterr().out
    assert "gamma-000003" in out and "monitor" in out and "last event: step" in out
    assert main(["logs", "gamma-000003"]) == 0
    out = capsys.readouterr().out
    assert "started" in out and "loss=0.1235" in out


def test_unknown_job_is_a_user_error(capsys):
    assert main(["status", "nope"]) == 2
    assert "no job 'nope'" in capsys.readouterr().err


def test_gc_destroys_orphans_and_keeps_live_jobs(lorarun_home, capsys):
    store = JobStore()
    local = lorarun_home / "local"
    (local / "lorarun-ghost-aaaaaa").mkdir(parents=True)  # no local job owns it
    (local / "lorarun-live-bbbbbb").mkdir(parents=True)
    _job(
        store,
        "live-bbbbbb",
        instance_id="lorarun-live-bbbbbb",
        controller_pid=os.getpid(),
        controller_host=socket.gethostname(),
        lease_deadline=time.time() + 3600,
    )
    (local / "lorarun-old-cccccc").mkdir(parents=True)
    _job(
        store,
        "old-cccccc",
        instance_id="lorarun-old-cccccc",
        controller_pid=os.getpid(),
        controller_host=socket.gethostname(),
        lease_deadline=time.time() - 10,
    )
    assert main(["gc", "--yes", "--provider", "local"]) == 0
    out = capsys.readouterr().out
    assert "no local job owns it" in out and "lease expired" in out and "live job" in out
    assert not (local / "lorarun-ghost-aaaaaa").exists()
    assert not (local / "lorarun-old-cccccc").exists()
    assert (local / "lorarun-live-bbbbbb").exists()
    assert store.load("old-cccccc").instance_destroyed


def test_gc_without_yes_and_without_a_terminal_refuses(lorarun_home, capsys):
    (lorarun_home / "local" / "lorarun-ghost-dddddd").mkdir(parents=True)
    assert main(["gc", "--provider", "local"]) == 2
    assert "pass --yes" in capsys.readouterr().err
    assert (lorarun_home / "local" / "lorarun-ghost-dddddd").exists()


def test_logs_follow_reads_the_running_instance_until_the_job_ends(lorarun_home, capsys):
    """`logs -f` goes through the controller (runner/run/follow.py): a link to the job's instance, its new events
    shown as they come, back when the engine says it finished."""
    store = JobStore()
    workdir = lorarun_home / "local" / "lorarun-delta-eeeeee"
    state = _job(store, "delta-eeeeee", instance_id="lorarun-delta-eeeeee", remote_dir=str(workdir / "delta-eeeeee"))
    remote_events = workdir / state.job_id / "output" / "events.jsonl"
    remote_events.parent.mkdir(parents=True)
    now = time.time()
    remote_events.write_text(
        "".join(
            json.dumps(e) + "\n"
            for e in (
                {"t": now, "event": "started", "total_steps": 4},
                {"t": now, "event": "step", "step": 3, "total_steps": 4, "loss": 0.25},
                {"t": now, "event": "finished", "step": 4, "path": "delta.safetensors"},
            )
        )
    )
    assert main(["logs", "-f", state.job_id, "--interval", "0"]) == 0
    out = capsys.readouterr().out
    assert "step" in out and "loss=0.25" in out and "finished" in out
    assert "no running instance" not in out


def test_logs_follow_says_when_the_instance_is_gone(lorarun_home, capsys):
    store = JobStore()
    state = _job(store, "eps-ffffff", instance_id="lorarun-eps-ffffff", remote_dir="/gone/eps-ffffff")
    assert main(["logs", "-f", state.job_id]) == 0
    assert "(the job has no running instance to follow)" in capsys.readouterr().out
