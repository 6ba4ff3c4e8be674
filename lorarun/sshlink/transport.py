"""How the controller reaches the machine a job runs on: over SSH (rented or owned host) or in-process (local).

The pipeline only talks to a `Transport`; `LocalTransport` (runner/remote/local.py) and `SSHTransport`
(lorarun/sshlink/session.py) implement it. Remote paths are POSIX strings; the job's remote work folder is
`${LORARUN_WORKDIR:-$HOME/lorarun}/<job_id>` (tests set LORARUN_WORKDIR through sshd's SetEnv) and the Python that
runs the agent is `$LORARUN_PYTHON`, else the image's fixed `/usr/local/bin/lorarun-python`, else `python3`.
The fixed path matters: an SSH session does not get the container's ENV, and the CUDA/PyTorch base images keep
their Python in /opt/conda/bin, on PATH only through that ENV, so a bare `python3` finds nothing (or the wrong
interpreter) there. Our image and the stock-path install both create the fixed path (image/instance/startup/).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# progress(bytes_done, bytes_total) — fed to a rich progress bar by the caller.
ProgressFn = Callable[[int, int], None]

REMOTE_WORKDIR_EXPR = '"${LORARUN_WORKDIR:-$HOME/lorarun}"'
IMAGE_PYTHON = "/usr/local/bin/lorarun-python"
REMOTE_PYTHON_EXPR = (
    f'"${{LORARUN_PYTHON:-$(if [ -x {IMAGE_PYTHON} ]; then echo {IMAGE_PYTHON}; else echo python3; fi)}}"'
)


@dataclass(frozen=True)
class LocalFile:
    """One file to upload: where it lands (POSIX, relative to the remote folder) and where it is on the laptop."""

    rel: str
    path: Path
    size: int


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

    def put_files(
        self, files: Sequence[LocalFile], remote: str, *, progress: ProgressFn | None = None, what: str = "files"
    ) -> TransferReport:
        """Upload exactly these files, each to `remote`/`rel` — the dataset goes this way, as the scan listed
        it, so nothing else in the user's folder leaves the laptop. Same skip/resume/verify as put_tree."""
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
