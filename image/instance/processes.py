"""Processes on the instance: the engine's whole tree (accelerate starts one worker per GPU), the agent's process
group, and whether the pid in `agent.pid` is still an agent. Linux /proc; stdlib only."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from lorarun.image.agent_files import PID_FILE

log = logging.getLogger("lorarun.agent")


def process_tree(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """`pid` and all its descendants, parents before children, read from /proc; just `[pid]` without /proc.

    SIGKILL on the engine alone would orphan its workers (`accelerate launch` starts one per GPU), which would
    keep the GPU busy and the process group alive.
    """
    children: dict[int, list[int]] = {}
    try:
        entries = list(proc.iterdir())
    except OSError:
        return [pid]
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 2 (comm) may hold spaces and parentheses; the fields after the last ')' are plain.
        after = stat[stat.rfind(")") + 2 :].split()
        if len(after) >= 2:
            children.setdefault(int(after[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def signal_quietly(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def become_group_leader() -> None:
    """Lead a process group so that `kill -- -<agent pid>` reaches the engine and its workers too.

    Started with setsid, the agent already leads its session and group (and setpgid would fail with EPERM).
    """
    if os.getpgrp() != os.getpid():
        try:
            os.setpgid(0, 0)
        except OSError as exc:
            log.warning("could not become a process-group leader: %s", exc)


def running_agent_pid(job_dir: Path, proc: Path = Path("/proc")) -> int | None:
    """The pid in `agent.pid` if that process is alive and is an agent (pids get reused), else None."""
    try:
        pid = int((job_dir / PID_FILE).read_text().strip())
        cmdline = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    return pid if b"lorarun.image.instance.agent" in cmdline or b"lorarun-agent" in cmdline else None
