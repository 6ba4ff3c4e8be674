"""The `local` provider's destroy ends the job's processes the way a rented machine going away would, and leaves
nothing of them behind on this machine."""

from __future__ import annotations

import time
from pathlib import Path

from lorarun.provider_adapters.local import LocalProvider
from lorarun.runner.remote.local import LocalTransport


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (Z: a zombie), or None once it no longer exists."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_destroy_reaps_an_agent_this_process_started_that_already_ended(tmp_path):
    """The local transport starts the agent as a child of the controller. One that has ended (its job done) is a
    zombie until waited for, and a zombie still answers a signal probe: destroy must reap it, not wait out its
    TERM/KILL deadlines on it and leave it behind."""
    provider = LocalProvider(tmp_path / "local")
    folder = provider.instance_dir("lorarun-e2e-1")
    job = folder / "job"
    job.mkdir(parents=True)
    pid = LocalTransport(job).start_detached(
        f"echo $$ > {job / 'agent.pid'}", cwd=str(job), log_path=str(job / "agent.log")
    )
    deadline = time.monotonic() + 30
    while _state(pid) != "Z":  # the stand-in agent wrote its pid (as the real one does) and ended
        assert time.monotonic() < deadline, f"process {pid} did not end: {_state(pid)}"
        time.sleep(0.05)
    assert (job / "agent.pid").read_text().strip() == str(pid)

    provider.destroy("lorarun-e2e-1")

    assert _state(pid) is None  # reaped: no zombie of the job left on this machine
    assert not folder.exists()
