"""The file side of `SSHTransport` (session.py): uploads that skip what is already there, resume partial files and
verify every byte by sha256, and downloads that resume where the bytes stopped. A mixin: it uses the session's
connection, retry and SFTP channel (`_with_retry`, `_sftp_client`, `_exec`); the byte-level work is sftp_io.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import shlex
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import paramiko

from lorarun.sshlink.errors import RemoteCommandError, RemoteError
from lorarun.sshlink.sftp_io import (
    CHUNK,
    MANIFEST_COMMAND,
    PART_SUFFIX,
    Counters,
    LocalFile,
    RemoteState,
    StreamVerifier,
    check_upload_list,
    download,
    list_files,
    manifest_request,
    parse_manifest,
    sha256_file,
    sha256_prefix,
    upload_file,
)
from lorarun.sshlink.transport import REMOTE_WORKDIR_EXPR, CommandResult, ProgressFn, TransferReport

T = TypeVar("T")
log = logging.getLogger(__name__)
STDERR_TAIL_CHARS = 2000  # what an error keeps of a remote command's stderr


class LinkDropped(Exception):
    """Internal: the link is gone (raised where paramiko gives no typed error)."""


class SFTPTransfers:
    if TYPE_CHECKING:  # provided by SSHTransport (session.py), whose file side this is
        params: Any  # SSHParams
        _lock: threading.RLock
        _upload_channels: int

        def _ensure(self) -> paramiko.Transport: ...
        def _with_retry(self, what: str, op: Callable[[], T], *, retry: bool = True) -> T: ...
        def _sftp_client(self) -> paramiko.SFTPClient: ...
        def _new_sftp(self, t: paramiko.Transport) -> paramiko.SFTPClient: ...
        def _sftp_path(self, remote: str) -> str: ...
        def _exec(self, command: str, timeout: float, input: bytes | None) -> CommandResult: ...

    # --- uploads --------------------------------------------------------------------------------------------------
    def put_tree(self, local: Path, remote: str, *, progress: ProgressFn | None = None) -> TransferReport:
        """Upload every regular file under the folder `local` into `remote` (see `put_files`)."""
        return self.put_files(list_files(Path(local)), remote, progress=progress, what=str(local))

    def put_files(
        self, files: Sequence[LocalFile], remote: str, *, progress: ProgressFn | None = None, what: str = "files"
    ) -> TransferReport:
        """Upload exactly `files` (each to `remote`/`rel`, folders created): one remote command lists what is
        already there (sha256 of same-size files, size and hash of partial uploads); identical files are skipped,
        partial ones resumed, the rest sent; every sent file is hashed remotely and compared. A dropped link
        reconnects and starts the same procedure again, which then skips and resumes what the first try did."""
        files = check_upload_list(files)
        root = self._sftp_path(remote)
        counters = Counters()
        hashes: dict[str, str] = {}  # local sha256 by relative path, filled as files are hashed
        sent, skipped = self._with_retry(
            f"upload {what} -> {remote}", lambda: self._put_tree_once(files, root, counters, progress, hashes)
        )
        manifest = tuple((f.rel, hashes[f.rel], f.size) for f in files)
        log.info("uploaded %d files (%d already there), %d bytes sent", sent, skipped, counters.bytes)
        return TransferReport(sent, skipped, counters.bytes, manifest)

    def _put_tree_once(
        self,
        files: Sequence[LocalFile],
        root: str,
        counters: Counters,
        progress: ProgressFn | None,
        hashes: dict[str, str],
    ) -> tuple[int, int]:
        res = self._exec(f"mkdir -p {shell_path(root)} && {MANIFEST_COMMAND}", 600.0, manifest_request(root, files))
        if res.exit_code != 0:
            raise RemoteCommandError("sha256 manifest of " + root, res.exit_code, res.stderr[-STDERR_TAIL_CHARS:])
        states = parse_manifest(res.stdout)
        todo = []  # (file, offset to resume from, hasher holding the first `offset` bytes)
        skipped = 0
        for f in files:
            st = states.get(f.rel, RemoteState())
            if st.sha256 is not None:  # same size there: only then is hashing the local file worth it
                if f.rel not in hashes:
                    hashes[f.rel] = sha256_file(f.path)
                if st.sha256 == hashes[f.rel]:
                    skipped += 1
                    continue
            if st.part_size and st.part_size <= f.size:
                prefix = sha256_prefix(f.path, st.part_size)
                if prefix.hexdigest() == st.part_sha256:
                    todo.append((f, st.part_size, prefix))
                    continue
            todo.append((f, 0, hashlib.sha256()))
        counters.begin(sum(f.size - off for f, off, _ in todo), progress)
        if not todo:
            return 0, skipped
        # Largest first, spread over a few SFTP channels: small files cost round trips that channels overlap.
        todo.sort(key=lambda item: item[0].size - item[1], reverse=True)
        t = self._ensure()
        verifier = StreamVerifier(t, root, self.params.io_timeout)
        queue, queue_lock = iter(todo), threading.Lock()
        failed = threading.Event()  # one channel failing stops the others from taking more files

        def worker() -> None:
            sftp = self._new_sftp(t)
            try:
                while not failed.is_set():
                    with queue_lock:
                        item = next(queue, None)
                    if item is None:
                        return
                    f, offset, hasher = item
                    with sftp_guard(sftp):
                        hashes[f.rel] = upload_file(sftp, f.path, posixpath.join(root, f.rel), offset, hasher, counters)
                    verifier.submit(f.rel)
            except BaseException:
                failed.set()
                raise
            finally:
                sftp.close()

        try:
            channels = min(self._upload_channels, len(todo))
            if channels == 1:
                worker()
            else:
                with ThreadPoolExecutor(channels) as pool:
                    for fut in [pool.submit(worker) for _ in range(channels)]:
                        fut.result()
            remote_hashes = verifier.results()
        finally:
            verifier.close()
        bad = [f.rel for f, _, _ in todo if remote_hashes.get(f.rel) != hashes[f.rel]]
        if bad:
            raise RemoteError(f"upload verification failed: sha256 differs for {len(bad)} file(s): {bad[:5]}")
        return len(todo), skipped

    def put_file(self, local: Path, remote: str) -> None:
        """Upload one file atomically (temporary name, then rename); creates the parent folder."""
        local = Path(local)
        rpath = self._sftp_path(remote)

        def op() -> None:
            parent = posixpath.dirname(rpath)
            if parent:
                self._exec(f"mkdir -p {shlex.quote(parent)}", 60.0, None)
            with self._lock:
                sftp = self._sftp_client()
                with sftp_guard(sftp):
                    upload_file(sftp, local, rpath, 0, hashlib.sha256(), Counters())

        self._with_retry(f"upload {local}", op)

    # --- downloads ------------------------------------------------------------------------------------------------
    def get_file(
        self, remote: str, local: Path, *, progress: ProgressFn | None = None, sha256: str | None = None
    ) -> None:
        """Download to `local` through `local.lorarun-part`, resuming that partial file when its bytes are a
        prefix of the remote file; renamed into place when complete. With `sha256`, verified before the rename."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(local.name + PART_SUFFIX)
        rpath = self._sftp_path(remote)
        self._with_retry(f"download {remote}", lambda: self._get_once(rpath, part, progress))
        if sha256 is not None:
            got = sha256_file(part)
            if got != sha256:
                part.unlink()
                raise RemoteError(f"download of {remote}: sha256 {got} does not match the expected {sha256}")
        os.replace(part, local)

    def _get_once(self, rpath: str, part: Path, progress: ProgressFn | None) -> None:
        sftp = self._new_sftp(self._ensure())  # own channel: a long download must not hold up the shared client
        try:
            with sftp_guard(sftp):
                self._get_with(sftp, rpath, part, progress)
        finally:
            sftp.close()

    def _get_with(self, sftp: paramiko.SFTPClient, rpath: str, part: Path, progress: ProgressFn | None) -> None:
        size = sftp.stat(rpath).st_size
        if size is None:  # SFTP attributes may omit the size; a download cannot be checked or resumed without it
            raise RemoteError(f"download of {rpath}: the server sent no file size")
        offset = part.stat().st_size if part.exists() else 0
        if offset > size or (offset and not self._remote_prefix_matches(rpath, part, offset)):
            offset = 0
        done = [offset]

        def on_bytes(n: int) -> None:
            done[0] += n
            if progress:
                progress(done[0], size)

        with open(part, "r+b" if offset else "wb") as lf:
            lf.seek(offset)
            lf.truncate()
            if progress:
                progress(offset, size)
            download(sftp, rpath, lf, offset, size, on_bytes)
            lf.flush()
            os.fsync(lf.fileno())

    def _remote_prefix_matches(self, rpath: str, part: Path, n: int) -> bool:
        res = self._exec(f"head -c {n} {shlex.quote(rpath)} | sha256sum", 600.0, None)
        return res.exit_code == 0 and res.stdout.split()[:1] == [sha256_prefix(part, n).hexdigest()]

    def read_bytes(self, remote: str, offset: int = 0) -> bytes | None:
        rpath = self._sftp_path(remote)

        def op() -> bytes | None:
            with self._lock:
                sftp = self._sftp_client()
                try:
                    with sftp_guard(sftp), sftp.open(rpath, "rb") as fh:
                        fh.seek(offset)
                        chunks = []
                        while data := fh.read(CHUNK):
                            chunks.append(data)
                        return b"".join(chunks)
                except FileNotFoundError:
                    return None

        return self._with_retry(f"read {remote}", op)

    def exists(self, remote: str) -> bool:
        rpath = self._sftp_path(remote)

        def op() -> bool:
            with self._lock:
                sftp = self._sftp_client()
                try:
                    with sftp_guard(sftp):
                        sftp.stat(rpath)
                    return True
                except FileNotFoundError:
                    return False

        return self._with_retry(f"stat {remote}", op)


@contextlib.contextmanager
def sftp_guard(sftp: paramiko.SFTPClient) -> Iterator[None]:
    """An error on an SFTP channel that the server closed (its sftp-server died) is a dropped link, to be
    re-opened, not an answer about the file: the link-level check alone misses it, the connection lives on."""
    try:
        yield
    except OSError as e:
        channel = sftp.get_channel()
        if channel is None or channel.closed:
            raise LinkDropped(f"SFTP channel closed by the server: {e}") from e
        raise


def shell_path(path: str) -> str:
    """Quote a remote path for the shell, leaving a leading REMOTE_WORKDIR_EXPR to be expanded."""
    if path.startswith(REMOTE_WORKDIR_EXPR):
        rest = path[len(REMOTE_WORKDIR_EXPR) :]
        return REMOTE_WORKDIR_EXPR + (shlex.quote(rest) if rest else "")
    return shlex.quote(path)
