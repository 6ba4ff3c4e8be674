"""The agent as the controller starts it: `python -m lorarun.image.instance.agent --job-dir <dir>`, real time, real signals.

These take a second or two each (the agent polls once a second); they check what the fake-clock tests cannot:
the process group, the signal handler, and that `main()` reads agent.json from the job folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lorarun.image.agent_files import AgentConfig

from .conftest import engine_command, names, read_events

WAIT = 30.0  # generous: a loaded CI machine; never a timing assertion


def wait_for(what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def phase(job_dir: Path) -> str | None:
    try:
        return json.loads((job_dir / "status.json").read_text())["phase"]
    except (OSError, ValueError):
        return None


def start_agent(tmp_path: Path, mode: str, **overrides) -> tuple[subprocess.Popen, Path, AgentConfig]:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    output_dir = job_dir / "output"
    values = dict(
        job_id="proc1",
        engine_command=engine_command(output_dir, mode),
        output_dir=str(output_dir),
        lease_deadline=time.time() + 3600,
        grace_seconds=600.0,
    )
    config = AgentConfig(**(values | overrides))
    (job_dir / "agent.json").write_text(config.to_json())
    with open(job_dir / "agent.log", "wb") as agent_log:  # as the controller's start_detached does
        proc = subprocess.Popen(
            [sys.executable, "-m", "lorarun.image.instance.agent", "--job-dir", str(job_dir)],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=agent_log,
        )
    return proc, job_dir, config


def finish(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("the agent did not exit")


def test_agent_process_runs_engine_in_its_group_and_exits_once_collected(tmp_path):
    proc, job_dir, config = start_agent(tmp_path, "finish")
    try:
        wait_for("the grace window", lambda: phase(job_dir) == "grace")
        assert (job_dir / "agent.pid").read_text().strip() == str(proc.pid)
        assert os.getpgid(proc.pid) == proc.pid  # `kill -- -<pid>` reaches the whole tree
        (job_dir / "collected").write_text("")
        assert finish(proc) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    status = json.loads((job_dir / "status.json").read_text())
    assert (status["phase"], status["outcome"], status["engine_exit_code"]) == ("finished", "finished", 0)
    assert "agent_started" in names(read_events(config.output_dir))
    assert "lease until" in (job_dir / "agent.log").read_text()


def test_sigterm_to_agent_is_forwarded_to_engine(tmp_path):
    proc, job_dir, config = start_agent(tmp_path, "hang")
    try:
        wait_for("the engine to start", lambda: "started" in names(read_events(config.output_dir)))
        engine_pid = json.loads((job_dir / "status.json").read_text())["engine_pid"]
        assert os.getpgid(engine_pid) == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    events = names(read_events(config.output_dir))
    assert events.index("stopped") < events.index("engine_exited")  # the engine saved and stopped first
    status = json.loads((job_dir / "status.json").read_text())
    assert (status["phase"], status["engine_exit_code"]) == ("stopped", 0)
    assert (Path(config.output_dir) / "last.safetensors").exists()


def test_a_second_agent_for_the_same_job_refuses_to_start(tmp_path):
    proc, job_dir, config = start_agent(tmp_path, "hang")
    try:
        wait_for("the first agent", lambda: phase(job_dir) == "training")
        second = subprocess.run(
            [sys.executable, "-m", "lorarun.image.instance.agent", "--job-dir", str(job_dir)],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert second.returncode == 3
        assert f"an agent (pid {proc.pid}) already runs" in second.stderr
        assert (job_dir / "agent.pid").read_text().strip() == str(proc.pid)  # the first one's files untouched
        assert names(read_events(config.output_dir)).count("started") == 1
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_stale_pid_file_does_not_block_a_new_agent(tmp_path):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "agent.pid").write_text(f"{os.getpid()}\n")  # alive, but pytest, not an agent
    from lorarun.image.instance.processes import running_agent_pid

    assert running_agent_pid(job_dir) is None
    (job_dir / "agent.pid").write_text("garbage")
    assert running_agent_pid(job_dir) is None
