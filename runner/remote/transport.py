"""How the controller reaches the machine a job runs on: over SSH (rented or owned host) or in-process (local).

The pipeline only talks to a `Transport`; `LocalTransport` (runner/remote/local.py) and `SSHTransport`
(runner/remote/session.py) implement it. Remote paths are POSIX strings; the job's remote work folder is
`${LORARUN_WORKDIR:-$HOME/lorarun}/<job_id>` (tests set LORARUN_WORKDIR through sshd's SetEnv) and the Python that
runs the agent is `${LORARUN_PYTHON:-python3}`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# progress(bytes_done, bytes_total) — fed to a rich progress bar by the caller.
ProgressFn = Callable[[int, int], None]

REMOTE_WORKDIR_EXPR = '"${LORARUN_WORKDIR:-$HOME/lorarun}"'
REMOTE_PYTHON_EXPR = '"${LORARUN_PYTHON:-python3}"'


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class TransferReport:
    files_sent: int
    files_skipped: int  # already there with the same sha256
    bytes_sent: int
    manifest: tuple[tuple[str, str, int], ...]  # (relative path, sha256, size) of every file in the tree


class Transport(Protocol):
    def run(self, command: str, *, timeout: float = 120.0, check: bool = True) -> CommandResult:
        """Run a shell command. With `check`, a non-zero exit raises RemoteCommandError (exit code + stderr tail)."""
        ...

    def start_detached(self, command: str, *, cwd: str, log_path: str) -> int:
        """Start `command` so that it survives this connection (setsid/nohup); returns its pid."""
        ...

    def put_tree(self, local: Path, remote: str, *, progress: ProgressFn | None = None) -> TransferReport:
        """Upload a folder; skip files whose sha256 already matches; resume a partial file; verify."""
        ...

    def put_file(self, local: Path, remote: str) -> None: ...

    def get_file(self, remote: str, local: Path, *, progress: ProgressFn | None = None) -> None:
        """Download atomically (to a temp name, then rename), resuming a partial download."""
        ...

    def read_bytes(self, remote: str, offset: int = 0) -> bytes | None:
        """Bytes from `offset` to the end, or None when the file does not exist (used to tail events.jsonl)."""
        ...

    def exists(self, remote: str) -> bool: ...

    def close(self) -> None: ...
