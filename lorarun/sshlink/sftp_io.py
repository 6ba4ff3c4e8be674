"""The byte-moving half of `SSHTransport`: local listings and hashes, the remote sha256 manifest, pipelined SFTP
writes and reads, and the streaming verifier.

Speed matters here (a 200 MB dataset is the common case, on hosts with slow links), so:
- local files are hashed while they are sent, not in a separate pass, unless the remote already has a file of
  the same size (then the hash decides whether to skip it);
- writes are pipelined (no round trip per request) with requests of almost 256 KiB, the most OpenSSH's
  sftp-server takes;
- reads keep up to PREFETCH_REQUESTS requests in flight, in the caller's thread (paramiko's own `prefetch` runs a
  thread that dies noisily when the link drops);
- uploaded files are verified by a remote hasher that runs while the upload goes on.

The pipelined reader uses paramiko's `SFTPClient._async_request` / `_read_response`, the same calls its
`SFTPFile` makes; they have been stable across paramiko 2.x to 5.x.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import paramiko
from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, int64

from lorarun.sshlink.errors import RemoteError
from lorarun.sshlink.transport import REMOTE_PYTHON_EXPR, LocalFile, ProgressFn

PART_SUFFIX = ".lorarun-part"  # partial uploads/downloads live under this name until they are complete
CHUNK = 1 << 20  # local read size
# OpenSSH's sftp-server accepts up to 256 KiB per request (its limits@openssh.com answers 261120 bytes of data);
# paramiko's default of 32 KiB costs eight times as many requests.
SFTP_WRITE_SIZE = 261120 - 1024
SFTP_READ_SIZE = 1 << 17
PREFETCH_REQUESTS = 32  # reads in flight per download: fills the pipe without buffering a whole checkpoint


@dataclass(frozen=True)
class RemoteState:
    """What the remote side has for one file: the final file and/or a partial upload."""

    size: int | None = None
    sha256: str | None = None  # only computed when the size matches the local file
    part_size: int | None = None
    part_sha256: str | None = None


def list_files(root: Path) -> list[LocalFile]:
    """Every regular file under `root`, sorted (symlinked files are followed, leftovers of ours are not sent)."""
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.endswith(PART_SUFFIX) or not path.is_file():
                continue
            out.append(LocalFile(path.relative_to(root).as_posix(), path, path.stat().st_size))
    return out


def local_files(pairs: Iterable[tuple[str, Path]]) -> list[LocalFile]:
    """`LocalFile`s for an explicit upload list of (relative path, local path); sizes are those of the file a
    symlink points to, which is what gets sent."""
    return [LocalFile(rel, Path(path), Path(path).stat().st_size) for rel, path in pairs]


def check_upload_list(files: Sequence[LocalFile]) -> list[LocalFile]:
    """Refuse an upload list that would write outside its remote folder or twice to one place (a bug upstream,
    never user input: the dataset scan builds these lists)."""
    seen: set[str] = set()
    for f in files:
        parts = PurePosixPath(f.rel).parts
        if not f.rel or f.rel.startswith("/") or ".." in parts or "\\" in f.rel or f.rel in seen:
            raise ValueError(f"upload list: bad or repeated relative path {f.rel!r}")
        seen.add(f.rel)
    return list(files)


def sha256_file(path: Path) -> str:
    return sha256_prefix(path, None).hexdigest()


def sha256_prefix(path: Path, n: int | None) -> hashlib._Hash:
    """A hasher fed with the first `n` bytes of `path` (all of it for None); the caller may keep feeding it."""
    h = hashlib.sha256()
    left = n
    with open(path, "rb") as fh:
        while left is None or left > 0:
            data = fh.read(CHUNK if left is None else min(CHUNK, left))
            if not data:
                break
            h.update(data)
            if left is not None:
                left -= len(data)
    return h


# --- remote manifest ------------------------------------------------------------------------------------------------
# One command, a JSON request on stdin, a JSON answer on stdout. It creates the folders, stats every file and hashes
# only what could match (same size as the local file), plus partial uploads (for resuming).
_MANIFEST_PY = r"""
import hashlib, json, os, sys
req = json.load(sys.stdin)
root, suffix, out = req["root"], req["suffix"], {}
def digest(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
for rel, size in req["files"]:
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    r = {}
    try:
        st = os.stat(p)
        r["size"] = st.st_size
        if st.st_size == size:
            r["sha256"] = digest(p)
    except FileNotFoundError:
        pass
    try:
        st = os.stat(p + suffix)
        if st.st_size <= size:
            r["part_size"], r["part_sha256"] = st.st_size, digest(p + suffix)
    except FileNotFoundError:
        pass
    if r:
        out[rel] = r
json.dump(out, sys.stdout)
"""

# Reads one JSON string (a relative path) per line and answers `[path, sha256 or null]` per line, as soon as each is
# hashed: the upload feeds it each file as it lands, so verification runs alongside the transfer.
_VERIFY_PY = r"""
import hashlib, json, os, sys
root = sys.argv[1]
for line in sys.stdin:
    rel = json.loads(line)
    try:
        h = hashlib.sha256()
        with open(os.path.join(root, rel), "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        sha = h.hexdigest()
    except OSError:
        sha = None
    sys.stdout.write(json.dumps([rel, sha]) + "\n")
    sys.stdout.flush()
"""

# -S: no site-packages to scan at start-up (only json and hashlib are needed); it halves the start-up time.
MANIFEST_COMMAND = f"{REMOTE_PYTHON_EXPR} -S -c {shlex.quote(_MANIFEST_PY)}"


def manifest_request(root: str, files: Sequence[LocalFile]) -> bytes:
    return json.dumps({"root": root, "suffix": PART_SUFFIX, "files": [[f.rel, f.size] for f in files]}).encode()


def parse_manifest(stdout: str) -> dict[str, RemoteState]:
    raw = json.loads(stdout or "{}")
    return {
        rel: RemoteState(r.get("size"), r.get("sha256"), r.get("part_size"), r.get("part_sha256"))
        for rel, r in raw.items()
    }


class StreamVerifier:
    """A remote hasher on its own exec channel: `submit(rel)` after each upload, `results()` at the end."""

    def __init__(self, transport: paramiko.Transport, root: str, timeout: float):
        self._chan = transport.open_session(timeout=timeout)
        self._chan.settimeout(timeout)
        self._chan.exec_command(f"{REMOTE_PYTHON_EXPR} -S -c {shlex.quote(_VERIFY_PY)} {shlex.quote(root)}")
        self._lock = threading.Lock()
        self._sent = 0

    def submit(self, rel: str) -> None:
        with self._lock:
            self._chan.sendall((json.dumps(rel) + "\n").encode())
            self._sent += 1

    def results(self) -> dict[str, str | None]:
        self._chan.shutdown_write()
        out = bytearray()
        while data := self._chan.recv(1 << 16):
            out += data
        code = self._chan.recv_exit_status()
        err = b""
        while self._chan.recv_stderr_ready():
            err += self._chan.recv_stderr(1 << 16)
        self._chan.close()
        lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        if code == -1:
            # No exit status at all: the channel closed under us, i.e. the link dropped (paramiko's
            # recv_exit_status gives -1 then). A link failure, so the upload reconnects and resumes (#27); not a
            # "verification exited -1" the user cannot make sense of.
            raise ConnectionResetError(
                f"the connection dropped while the instance was checking the upload ({len(lines)} of "
                f"{self._sent} files checked)"
            )
        if code != 0 or len(lines) != self._sent:
            raise RemoteError(
                f"remote verification exited {code} after {len(lines)} of {self._sent} files: "
                f"{err.decode(errors='replace')[-500:]}"
            )
        return dict(lines)

    def close(self) -> None:
        self._chan.close()


# --- transfers ------------------------------------------------------------------------------------------------------
@dataclass
class Counters:
    """Bytes sent, shared by the upload channels; feeds the progress callback."""

    bytes: int = 0
    done: int = 0
    total: int = 0
    progress: ProgressFn | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, total: int, progress: ProgressFn | None) -> None:
        self.done, self.total, self.progress = 0, total, progress
        if progress:
            progress(0, total)

    def add(self, n: int) -> None:
        # Called from several upload threads: the callback runs under the lock so that it sees `done` grow.
        with self.lock:
            self.bytes += n
            self.done += n
            if self.progress:
                self.progress(self.done, self.total)


def upload_file(sftp: paramiko.SFTPClient, local: Path, rpath: str, offset: int, hasher, counters: Counters) -> str:
    """Send `local` from `offset` to `rpath + PART_SUFFIX`, rename it to `rpath`, return the local sha256.

    `hasher` already holds the first `offset` bytes; the rest is hashed as it is read, so the hash describes
    exactly the bytes that were sent even if the local file changes meanwhile.
    """
    tmp = rpath + PART_SUFFIX
    # "r+" keeps the bytes already there (resume); "w" starts over.
    with sftp.open(tmp, "r+b" if offset else "wb") as rf, open(local, "rb") as lf:
        rf.set_pipelined(True)  # no round trip per write; an error surfaces at close
        rf.MAX_REQUEST_SIZE = SFTP_WRITE_SIZE
        if offset:
            rf.seek(offset)
            lf.seek(offset)
        while data := lf.read(CHUNK):
            hasher.update(data)
            rf.write(data)
            counters.add(len(data))
    sftp.posix_rename(tmp, rpath)
    return hasher.hexdigest()


class _Responses:
    """Collects read replies that arrive while the reader waits for an earlier one (paramiko's callback shape)."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.got[num] = (t, msg)


def download(
    sftp: paramiko.SFTPClient, rpath: str, sink: BinaryIO, offset: int, size: int, on_bytes: Callable[[int], None]
) -> None:
    """Write bytes `offset..size` of `rpath` to `sink`, keeping PREFETCH_REQUESTS reads in flight."""
    # paramiko's own pipelined reads (SFTPFile.prefetch) use these private methods; its stubs do not declare them.
    raw: Any = sftp
    with sftp.open(rpath, "rb") as rf:
        handle = rf.handle
        replies = _Responses()
        pending: deque[tuple[int, int, int]] = deque()  # (request id, offset, length), oldest first
        next_off = offset
        while next_off < size or pending:
            while next_off < size and len(pending) < PREFETCH_REQUESTS:
                n = min(SFTP_READ_SIZE, size - next_off)
                num = raw._async_request(replies, CMD_READ, handle, int64(next_off), int(n))
                pending.append((num, next_off, n))
                next_off += n
            num, off, n = pending.popleft()
            t, msg = replies.got.pop(num, None) or raw._read_response(num)
            if t == CMD_STATUS:
                raw._convert_status(msg)  # raises (EOF: the file shrank)
                raise RemoteError(f"unexpected status reading {rpath}")
            if t != CMD_DATA:
                raise RemoteError(f"unexpected SFTP reply {t} reading {rpath}")
            data = msg.get_string()
            sink.write(data)
            on_bytes(len(data))
            if len(data) < n:  # a short read: fetch the rest of this block before the next one
                _read_exact(rf, off + len(data), n - len(data), sink, on_bytes)


def _read_exact(rf: paramiko.SFTPFile, off: int, n: int, sink: BinaryIO, on_bytes: Callable[[int], None]) -> None:
    rf.seek(off)
    while n > 0:
        data = rf.read(n)
        if not data:
            raise RemoteError(f"remote file ended early at byte {off}")
        sink.write(data)
        on_bytes(len(data))
        off, n = off + len(data), n - len(data)
