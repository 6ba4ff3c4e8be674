"""`LocalTransport`: the `Transport` for the `local` provider — this machine, a staging folder in place of the
instance, subprocesses in place of SSH. The pipeline cannot tell the difference, which is the point: the demo
exercises the same code path as a rented GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from lorarun.sshlink.errors import RemoteCommandError, RemoteTimeout
from lorarun.sshlink.sftp_io import check_upload_list, local_files, sha256_file
from lorarun.sshlink.transport import CommandResult, LocalFile, ProgressFn, TransferReport

# Every detached start's Popen, until its child has ended and been reaped. Dropping a Popen while its child runs would
# hand the child to `subprocess`'s own background reaping (`Popen.__del__` queues it; the next Popen anywhere in this
# process, in any thread, reaps it): then whether an ended agent is still a zombie (which `kill -0` reports as alive)
# would depend on what else this process happened to start. Held here, it is reaped at two known moments: before each
# command this transport runs (so the monitor's `kill -0` sees an ended agent as gone, as on a rented machine where
# the agent is not our child) and by the local provider's destroy.
_DETACHED: dict[int, subprocess.Popen[bytes]] = {}


def _reap_ended_detached() -> None:
    for pid, proc in list(_DETACHED.items()):
        if proc.poll() is not None:  # ended: reaped now (or already, by destroy: then poll() sees ECHILD, not None)
            _DETACHED.pop(pid, None)  # another thread may have dropped it first


class LocalTransport:
    def __init__(self, workdir: Path, python: str = sys.executable):
        self.workdir = workdir
        # The same variables sshd's SetEnv gives the test instances, so remote commands expand identically.
        self.env = {**os.environ, "LORARUN_WORKDIR": str(workdir), "LORARUN_PYTHON": python}

    def run(self, command: str, *, timeout: float = 120.0, check: bool = True) -> CommandResult:
        _reap_ended_detached()
        try:
            proc = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=timeout, env=self.env
            )
        except subprocess.TimeoutExpired:
            raise RemoteTimeout(command, timeout) from None
        result = CommandResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise RemoteCommandError(command, proc.returncode, proc.stderr)
        return result

    def start_detached(self, command: str, *, cwd: str, log_path: str) -> int:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                ["bash", "-c", command],
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _DETACHED[proc.pid] = proc
        return proc.pid

    def put_tree(self, local: Path, remote: str, *, progress: ProgressFn | None = None) -> TransferReport:
        files = local_files((p.relative_to(local).as_posix(), p) for p in sorted(local.rglob("*")) if p.is_file())
        return self.put_files(files, remote, progress=progress)

    def put_files(
        self, files: Sequence[LocalFile], remote: str, *, progress: ProgressFn | None = None, what: str = "files"
    ) -> TransferReport:
        files = check_upload_list(files)
        total = sum(f.size for f in files)
        done = sent = sent_files = skipped = 0
        manifest = []
        for f in files:
            digest = sha256_file(f.path)
            manifest.append((f.rel, digest, f.size))
            target = Path(remote) / f.rel
            if target.is_file() and target.stat().st_size == f.size and sha256_file(target) == digest:
                skipped += 1
            else:
                self.put_file(f.path, str(target))
                sent += f.size
                sent_files += 1
            done += f.size
            if progress:
                progress(done, total)
        return TransferReport(sent_files, skipped, sent, tuple(manifest))

    def put_file(self, local: Path, remote: str) -> None:
        _atomic_copy(local, Path(remote))

    def get_file(self, remote: str, local: Path, *, progress: ProgressFn | None = None) -> None:
        source = Path(remote)
        if not source.is_file():
            raise RemoteCommandError(f"get {remote}", 1, "no such file")
        _atomic_copy(source, local)
        if progress:
            size = local.stat().st_size
            progress(size, size)

    def read_bytes(self, remote: str, offset: int = 0) -> bytes | None:
        try:
            with open(remote, "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return None

    def exists(self, remote: str) -> bool:
        return Path(remote).exists()

    def close(self) -> None:
        pass


def _atomic_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
