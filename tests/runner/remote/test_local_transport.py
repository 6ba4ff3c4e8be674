"""The local transport's detached start: the agent it starts is this process's child, so an ended one is a zombie
until reaped — and a zombie answers `kill -0` as if alive. The transport reaps it before each command it runs, so
the monitor's liveness probe sees an ended agent as gone, whatever else this process has started."""

from __future__ import annotations

import time
from pathlib import Path

from lorarun.runner.remote.local import LocalTransport


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (Z: a zombie), or None once it no longer exists."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_an_ended_detached_agent_stays_ours_until_the_next_command_then_reads_as_gone(tmp_path):
    transport = LocalTransport(tmp_path)
    pid = transport.start_detached("exit 3", cwd=str(tmp_path), log_path=str(tmp_path / "agent.log"))
    deadline = time.monotonic() + 30
    while _state(pid) != "Z":  # ended, and nobody but this transport may reap it
        assert time.monotonic() < deadline, f"process {pid} did not end as a zombie: {_state(pid)}"
        time.sleep(0.05)

    probe = transport.run(f"kill -0 {pid}", check=False)

    assert probe.exit_code != 0  # the liveness probe the monitor sends: the ended agent is gone
    assert _state(pid) is None


def test_a_running_detached_agent_reads_as_alive(tmp_path):
    transport = LocalTransport(tmp_path)
    pid = transport.start_detached("exec sleep 30", cwd=str(tmp_path), log_path=str(tmp_path / "agent.log"))
    try:
        assert transport.run(f"kill -0 {pid}", check=False).exit_code == 0
    finally:
        transport.run(f"kill -KILL {pid}", check=False)
    deadline = time.monotonic() + 30
    while _state(pid) != "Z":
        assert time.monotonic() < deadline, f"process {pid} did not die: {_state(pid)}"
        time.sleep(0.05)
    transport.run("true")  # reaps it
    assert _state(pid) is None
