"""Two controllers on one job (#12.6): one holds it (pid + host), a second `attach` says who, and `down` from a
second terminal is delivered to the holder — or takes over cleanly when the holder is dead. The real engine on the
local provider, the controller a real second process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.cloud import tiny_job
from support.shared_clock import QUICK_CLI

from lorarun.runner.cli.app import main
from lorarun.runner.errors import JobBusy, JobNotFound
from lorarun.runner.state import JobState, JobStore

pytest.importorskip("torch")


def _submit_process(job: Path, holds) -> subprocess.Popen:
    """`lorarun submit` in its own process, held once its monitor has seen the first step (image/hold_points.py)."""
    code = QUICK_CLI  # the CLI with quick_waits (tests/support/shared_clock.py), as in-process e2e tests run it
    return subprocess.Popen(
        [sys.executable, "-c", code, "submit", str(job), "--yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **holds.env("training")},
        start_new_session=True,
    )


def _training(proc: subprocess.Popen, holds) -> JobState:
    """The job's state once the controller (held at "training") is there: it is training, whatever the machine."""
    try:
        holds.wait_reached("training", proc)
    except AssertionError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    (state,) = JobStore().all()
    return state


@pytest.mark.slow
def test_second_attach_names_the_holder_and_down_is_delivered_to_it(tmp_path, capsys, holds):
    job = tiny_job(tmp_path, "local", epochs=400)
    proc = _submit_process(job, holds)
    try:
        state = _training(proc, holds)
        holds.release("training")  # the holder goes on following the job, and takes `down`'s request
        assert main(["attach", state.job_id]) == 2
        err = capsys.readouterr().err
        assert f"is driven by `lorarun submit` (pid {proc.pid} on {socket.gethostname()}" in err
        assert "Traceback" not in err and "internal error" not in err

        assert main(["down", state.job_id]) == 0
        captured = capsys.readouterr()
        assert "asked it to stop" in captured.err
        assert proc.wait(120) == 0, proc.stderr.read().decode()[-2000:]
        final = JobStore().load(state.job_id)
        assert final.phase == "stopped" and final.instance_destroyed  # the state itself says stopped (#23.8)
        assert "stopped by `lorarun down`" in final.message and "Ctrl-C" not in final.message
        assert final.message in captured.out
        assert not JobStore().lock_path(state.job_id).exists()
        assert list((tmp_path / "out").glob("e2e_lora*.safetensors")), "the last checkpoint came home"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_down_takes_over_when_the_holder_is_dead(tmp_path, capsys, holds):
    job = tiny_job(tmp_path, "local", epochs=400)
    proc = _submit_process(job, holds)
    state = _training(proc, holds)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert JobStore().lock_holder(state.job_id).pid == proc.pid  # the dead holder's lock is still there
    assert main(["down", state.job_id]) == 0, capsys.readouterr().err
    final = JobStore().load(state.job_id)
    assert final.phase == "stopped" and final.instance_destroyed
    assert "stopped by `lorarun down`" in final.message
    assert not JobStore().lock_path(state.job_id).exists()


def _state(store: JobStore, job_id: str) -> JobState:
    return store.create(JobState(job_id=job_id, name="x", job_file="/x.yaml", provider="local", output_dir="/o"))


def test_lock_rules(tmp_path):
    store = JobStore(tmp_path)
    _state(store, "job-aaa111")
    me = store.acquire("job-aaa111", "attach")
    assert me.pid == os.getpid() and store.acquire("job-aaa111", "attach").pid == os.getpid()
    store.release("job-aaa111")
    assert store.lock_holder("job-aaa111") is None
    # A live holder elsewhere (another process): refused, named.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        store.lock_path("job-aaa111").write_text(
            f'{{"pid": {sleeper.pid}, "host": "{socket.gethostname()}", "command": "attach", "since": 0}}'
        )
        with pytest.raises(JobBusy, match=f"driven by `lorarun attach` \\(pid {sleeper.pid}"):
            store.acquire("job-aaa111", "down")
    finally:
        sleeper.kill()
        sleeper.wait()
    # The same holder, now dead: taken over.
    assert store.acquire("job-aaa111", "down").command == "down"
    assert store.lock_holder("job-aaa111").pid == os.getpid()


def test_stop_requests_are_consumed_once(tmp_path):
    store = JobStore(tmp_path)
    _state(store, "job-bbb222")
    assert store.take_stop_request("job-bbb222") is None
    store.request_stop("job-bbb222", "stopped by `lorarun down` (pid 1 on h)")
    assert store.take_stop_request("job-bbb222") == "stopped by `lorarun down` (pid 1 on h)"
    assert store.take_stop_request("job-bbb222") is None


def test_an_ambiguous_prefix_says_which_jobs_match(tmp_path):
    store = JobStore(tmp_path)
    _state(store, "demo-aaa111")
    _state(store, "demo-bbb222")
    with pytest.raises(JobNotFound, match=r"'demo' matches 2 jobs \(demo-aaa111, demo-bbb222\)"):
        store.load("demo")
    assert store.load("demo-b").job_id == "demo-bbb222"
