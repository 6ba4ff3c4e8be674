"""`SSHTransport`: the `Transport` over SSH (paramiko), for rented instances and hosts the user owns.

What it guarantees, because rented marketplace hosts are slow, flaky and shared:
- host keys are trusted on first use and pinned per job (`known_hosts` is a job file): a different key later raises
  `HostKeyChanged` and nothing is sent;
- a dropped connection is re-opened with backoff (the sleep is injectable) and the operation retried; uploads and
  downloads resume where the bytes stopped instead of starting over;
- uploads skip files whose sha256 already matches, land under a temporary name and are renamed into place, and
  are verified against the local sha256 at the end;
- SFTP is pipelined (writes are not acknowledged one by one, reads are prefetched), uses large requests and an
  AEAD cipher, and spreads many-file uploads over a few SFTP channels, so it keeps up with OpenSSH's `scp`.

Remote paths are POSIX strings, absolute or relative to the login folder. A path that starts with
`REMOTE_WORKDIR_EXPR` (`"${LORARUN_WORKDIR:-$HOME/lorarun}"`) is expanded on the remote side, for shell commands
and SFTP alike.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import paramiko

from .errors import (
    AuthenticationFailed,
    ConnectionLost,
    HostKeyChanged,
    RemoteCommandError,
    RemoteError,
    RemoteTimeout,
)
from .transport import REMOTE_PYTHON_EXPR, REMOTE_WORKDIR_EXPR, CommandResult, ProgressFn, TransferReport

log = logging.getLogger(__name__)
T = TypeVar("T")

PART_SUFFIX = ".lorarun-part"  # partial uploads/downloads live under this name until they are complete
STDERR_TAIL_CHARS = 2000
CHUNK = 1 << 20  # local read/write size
# Our receive window and the largest packet we accept: big, so a download is never throttled by window updates.
WINDOW_SIZE = 1 << 27
MAX_PACKET = 1 << 15
# OpenSSH's sftp-server takes requests of up to 256 KiB (its `limits@openssh.com` says 261120 bytes of data);
# paramiko's default of 32 KiB costs a request and a reply per 32 KiB.
SFTP_WRITE_SIZE = 261120 - 1024
SFTP_READ_SIZE = 32768 * 4
PREFETCH_REQUESTS = 64  # outstanding reads per download: keeps the pipe full without buffering a whole file
UPLOAD_CHANNELS = 3  # parallel SFTP channels for many-file uploads
# AEAD ciphers first: one pass instead of cipher + HMAC. Falls back to paramiko's defaults.
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
# Which host key algorithms show a pinned key of a given type again.
KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
}


@dataclass(frozen=True)
class SSHParams:
    host: str
    port: int
    username: str
    key_path: Path  # private key: the per-job key, or the user's own for the `ssh` provider
    known_hosts: Path  # the job's own pin file (trust on first use, then pinned)
    connect_timeout: float = 15.0
    keepalive_s: int = 15  # an SSH keep-alive every N seconds: NAT boxes on marketplace hosts drop idle links
    io_timeout: float = 120.0  # a transfer that gets no byte for this long counts as a dropped connection


@dataclass(frozen=True)
class RetryPolicy:
    """Reconnect policy: `attempts` tries in all, sleeping base × factor^n (capped) between them."""

    attempts: int = 6
    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.max_delay, self.base_delay * self.factor ** max(0, failures - 1))


@dataclass(frozen=True)
class _RemoteState:
    """What the remote side has for one file: the final file and/or a partial upload."""

    size: int | None = None
    sha256: str | None = None  # only computed when the size matches the local file
    part_size: int | None = None
    part_sha256: str | None = None


@dataclass(frozen=True)
class _LocalFile:
    rel: str
    path: Path
    size: int
    sha256: str


class _Dropped(Exception):
    """Internal: the link is gone (raised where paramiko gives no typed error)."""


# The remote half of the manifest exchange: one command, a JSON request on stdin, a JSON answer on stdout.
# It creates the folders, stats every file and hashes only what could match (same size), plus partial uploads.
_REMOTE_MANIFEST_PY = r"""
import hashlib, json, os, sys
req = json.load(sys.stdin)
root, suffix, out = req["root"], req["suffix"], {}
def digest(p, limit=None):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
for rel, size in req["files"]:
    p = os.path.join(root, rel)
    if req.get("mkdir"):
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
            r["part_size"] = st.st_size
            r["part_sha256"] = digest(p + suffix)
    except FileNotFoundError:
        pass
    if r:
        out[rel] = r
json.dump(out, sys.stdout)
"""


class SSHTransport:
    """`Transport` over one SSH connection (re-opened when it drops). Thread-safe for concurrent operations."""

    def __init__(
        self,
        params: SSHParams,
        *,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        upload_channels: int = UPLOAD_CHANNELS,
    ):
        self.params = params
        self.retry = retry
        self._sleep = sleep
        self._upload_channels = max(1, upload_channels)
        self._lock = threading.RLock()  # guards connect/drop and the shared SFTP client
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._workdir: str | None = None
        self.reconnects = 0  # how many times a dropped link was re-opened (reported, and asserted by tests)

    # --- connection ----------------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the connection now (otherwise the first operation does). Retries per the policy."""
        self._with_retry("connect", lambda: None)

    def _ensure(self) -> paramiko.Transport:
        with self._lock:
            if self._transport is not None and self._transport.is_active():
                return self._transport
            self._drop()
            self._transport = self._open()
            return self._transport

    def _open(self) -> paramiko.Transport:
        p = self.params
        try:
            sock = socket.create_connection((p.host, p.port), timeout=p.connect_timeout)
        except OSError as e:
            raise _Dropped(f"cannot reach {p.host}:{p.port}: {e}") from e
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET)
        t.banner_timeout = p.connect_timeout
        t.handshake_timeout = p.connect_timeout
        opts = t.get_security_options()
        opts.ciphers = _prefer(FAST_CIPHERS, opts.ciphers)
        pins = _pinned_keys(p.known_hosts, p.host, p.port)
        if pins:
            # Ask for the pinned key's type, so a server with several host keys shows the one we know.
            wanted = [a for k in pins for a in KEY_ALGORITHMS.get(k.get_name(), (k.get_name(),))]
            usable = tuple(a for a in wanted if a in opts.key_types)
            if usable:
                opts.key_types = usable
        try:
            t.start_client(timeout=p.connect_timeout)
            _check_or_pin(p.known_hosts, p.host, p.port, t.get_remote_server_key())
            pkey = _load_key(p.key_path)
            t.auth_publickey(p.username, pkey)
        except (HostKeyChanged, AuthenticationFailed):
            t.close()
            raise
        except paramiko.AuthenticationException as e:
            t.close()
            raise AuthenticationFailed(f"{p.username}@{p.host}:{p.port} refused key {p.key_path}: {e}") from e
        except (paramiko.SSHException, EOFError, OSError) as e:
            t.close()
            raise _Dropped(f"SSH handshake with {p.host}:{p.port} failed: {e}") from e
        t.set_keepalive(p.keepalive_s)
        return t

    def _drop(self) -> None:
        with self._lock:
            sftp, t = self._sftp, self._transport
            self._sftp = self._transport = None
        for closable in (sftp, t):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # closing a dead link may raise anything; it is gone either way
                    pass

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _is_connection_error(self, e: BaseException) -> bool:
        if isinstance(e, RemoteError):
            return False  # already decided (timeouts, exit codes, host keys, auth)
        if isinstance(e, (_Dropped, EOFError, socket.timeout, ConnectionError, paramiko.SSHException)):
            return True
        # SFTP reports "no such file" and friends as OSError too; those are only link failures when the link died.
        t = self._transport
        return isinstance(e, OSError) and (t is None or not t.is_active())

    def _with_retry(self, what: str, op: Callable[[], T], *, retry: bool = True) -> T:
        failures = 0
        while True:
            try:
                self._ensure()
                return op()
            except Exception as e:
                if not self._is_connection_error(e):
                    raise
                self._drop()
                failures += 1
                if not retry or failures >= self.retry.attempts:
                    raise ConnectionLost(
                        f"{what}: SSH connection to {self.params.host}:{self.params.port} lost "
                        f"({failures} attempt{'s' if failures > 1 else ''}): {e}"
                    ) from e
                delay = self.retry.delay(failures)
                log.warning("%s: connection lost (%s); reconnecting in %.1fs", what, e, delay)
                self._sleep(delay)
                self.reconnects += 1

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            t = self._ensure()
            if self._sftp is None:
                self._sftp = self._new_sftp(t)
            return self._sftp

    def _new_sftp(self, t: paramiko.Transport) -> paramiko.SFTPClient:
        sftp = paramiko.SFTPClient.from_transport(
            t, window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET
        )
        if sftp is None:
            raise _Dropped("could not open an SFTP channel")
        sftp.get_channel().settimeout(self.params.io_timeout)
        return sftp

    # --- paths -----------------------------------------------------------------------------------------------------
    def workdir(self) -> str:
        """The remote `${LORARUN_WORKDIR:-$HOME/lorarun}`, resolved once."""
        if self._workdir is None:
            out = self.run(f"printf %s {REMOTE_WORKDIR_EXPR}", timeout=self.params.connect_timeout + 30).stdout
            self._workdir = out.strip()
        return self._workdir

    def _sftp_path(self, remote: str) -> str:
        if remote.startswith(REMOTE_WORKDIR_EXPR):
            return self.workdir() + remote[len(REMOTE_WORKDIR_EXPR) :]
        return remote

    # --- commands -------------------------------------------------------------------------------------------------
    def run(
        self,
        command: str,
        *,
        timeout: float = 120.0,
        check: bool = True,
        input: bytes | None = None,
        idempotent: bool = True,
    ) -> CommandResult:
        """Run `command` in the login shell. A dropped link re-runs it when `idempotent` (the default: lorarun's
        commands are reads, mkdir -p, kills); pass `idempotent=False` for a command that must not run twice."""
        what = f"run {command.splitlines()[0][:60] if command else ''!r}"
        if not idempotent:
            self.connect()  # reconnecting before the command was sent is always safe
        result = self._with_retry(what, lambda: self._exec(command, timeout, input), retry=idempotent)
        if check and result.exit_code != 0:
            raise RemoteCommandError(command, result.exit_code, result.stderr[-STDERR_TAIL_CHARS:], result.stdout)
        return result

    def _exec(self, command: str, timeout: float, input: bytes | None) -> CommandResult:
        t = self._ensure()
        chan = t.open_session(timeout=self.params.connect_timeout)
        try:
            chan.exec_command(command)
            if input:
                chan.sendall(input)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                if chan.exit_status_ready() and chan.eof_received and not chan.recv_ready() and not (
                    chan.recv_stderr_ready()
                ):
                    break
                if not t.is_active():
                    raise _Dropped("connection closed while the command ran")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # Closing the channel does not kill a command without a tty; it may go on remotely.
                    raise RemoteTimeout(command, timeout)
                # The channel's fileno is signalled by stdout, stderr and close alike.
                select.select([chan], [], [], min(remaining, 1.0))
            code = chan.recv_exit_status()
            return CommandResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        finally:
            chan.close()

    def start_detached(self, command: str, *, cwd: str, log_path: str) -> int:
        """Start `command` in its own session (setsid + nohup, stdin from /dev/null, output appended to
        `log_path`), so that it outlives this connection; return its pid (also its process group id).

        Not re-run after a drop once the command was sent: a second agent must never start.
        """
        q_cwd, q_log = _shell_path(cwd), _shell_path(log_path)
        script = (
            f"mkdir -p {q_cwd} && cd {q_cwd} && mkdir -p \"$(dirname {q_log})\" && "
            f"{{ setsid nohup sh -c {shlex.quote(command)} </dev/null >>{q_log} 2>&1 & }} && echo $!"
        )
        out = self.run(script, timeout=60, idempotent=False).stdout.strip()
        try:
            return int(out.splitlines()[-1])
        except (ValueError, IndexError) as e:
            raise RemoteError(f"start_detached: expected a pid, got {out!r}") from e

    # --- uploads --------------------------------------------------------------------------------------------------
    def put_tree(self, local: Path, remote: str, *, progress: ProgressFn | None = None) -> TransferReport:
        """Upload the folder `local` to `remote` (created). See the module docstring for the guarantees."""
        files = local_manifest(Path(local))
        total_bytes = sum(f.size for f in files)
        counters = _Counters()
        root = self._sftp_path(remote)

        def attempt() -> tuple[int, int]:
            return self._put_tree_once(files, root, counters, progress)

        sent_files, skipped = self._with_retry(f"upload {local} -> {remote}", attempt)
        self._verify(files, root)
        manifest = tuple((f.rel, f.sha256, f.size) for f in files)
        log.info("uploaded %d files (%d skipped), %d of %d bytes sent", sent_files, skipped, counters.bytes, total_bytes)
        return TransferReport(sent_files, skipped, counters.bytes, manifest)

    def _remote_states(self, root: str, files: list[_LocalFile], *, mkdir: bool) -> dict[str, _RemoteState]:
        request = json.dumps(
            {"root": root, "suffix": PART_SUFFIX, "mkdir": mkdir, "files": [[f.rel, f.size] for f in files]}
        ).encode()
        command = f"mkdir -p {_shell_path(root)} && {REMOTE_PYTHON_EXPR} -c {shlex.quote(_REMOTE_MANIFEST_PY)}"
        res = self._exec(command, 600.0, request)  # inside a retried operation: no retry of its own
        if res.exit_code != 0:
            raise RemoteCommandError(
                "sha256 manifest of " + root, res.exit_code, res.stderr[-STDERR_TAIL_CHARS:], res.stdout
            )
        raw = json.loads(res.stdout or "{}")
        return {
            rel: _RemoteState(r.get("size"), r.get("sha256"), r.get("part_size"), r.get("part_sha256"))
            for rel, r in raw.items()
        }

    def _put_tree_once(
        self, files: list[_LocalFile], root: str, counters: _Counters, progress: ProgressFn | None
    ) -> tuple[int, int]:
        states = self._remote_states(root, files, mkdir=True)
        todo: list[tuple[_LocalFile, int]] = []  # (file, offset to resume from)
        skipped = 0
        for f in files:
            st = states.get(f.rel, _RemoteState())
            if st.sha256 == f.sha256:
                skipped += 1
                continue
            offset = 0
            if st.part_size and st.part_size <= f.size and st.part_sha256 == _sha256_prefix(f.path, st.part_size):
                offset = st.part_size
            todo.append((f, offset))
        counters.begin(sum(f.size - off for f, off in todo), progress)
        if not todo:
            counters.report()
            return 0, skipped
        # Largest first, spread over a few SFTP channels: small files cost round trips, channels overlap them.
        todo.sort(key=lambda item: item[0].size - item[1], reverse=True)
        t = self._ensure()
        channels = min(self._upload_channels, len(todo))
        queue = iter(todo)
        queue_lock = threading.Lock()

        def worker() -> None:
            sftp = self._new_sftp(t)
            try:
                while True:
                    with queue_lock:
                        item = next(queue, None)
                    if item is None:
                        return
                    f, offset = item
                    _upload_file(sftp, f.path, posixpath.join(root, f.rel), offset, counters)
            finally:
                sftp.close()

        if channels == 1:
            worker()
        else:
            with ThreadPoolExecutor(channels) as pool:
                for fut in [pool.submit(worker) for _ in range(channels)]:
                    fut.result()
        return len(todo), skipped

    def _verify(self, files: list[_LocalFile], root: str) -> None:
        states = self._with_retry("verify upload", lambda: self._remote_states(root, files, mkdir=False))
        bad = [f.rel for f in files if states.get(f.rel, _RemoteState()).sha256 != f.sha256]
        if bad:
            raise RemoteError(f"upload verification failed for {len(bad)} file(s) under {root}: {bad[:5]}")

    def put_file(self, local: Path, remote: str) -> None:
        """Upload one file atomically (temporary name, then rename); creates the parent folder."""
        local = Path(local)
        rpath = self._sftp_path(remote)

        def op() -> None:
            sftp = self._sftp_client()
            parent = posixpath.dirname(rpath)
            if parent:
                self._exec(f"mkdir -p {shlex.quote(parent)}", 60.0, None)
            with self._lock:
                _upload_file(sftp, local, rpath, 0, _Counters())

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
        t = self._ensure()
        sftp = self._new_sftp(t)  # own channel: a long download must not hold up the shared client
        try:
            size = sftp.stat(rpath).st_size
            offset = part.stat().st_size if part.exists() else 0
            if offset > size or (offset and not self._remote_prefix_matches(rpath, part, offset)):
                offset = 0
            with sftp.open(rpath, "rb") as rf, open(part, "r+b" if offset else "wb") as lf:
                lf.seek(offset)
                lf.truncate()
                rf.MAX_REQUEST_SIZE = SFTP_READ_SIZE
                rf.seek(offset)
                rf.prefetch(size, max_concurrent_requests=PREFETCH_REQUESTS)
                done = offset
                if progress:
                    progress(done, size)
                while done < size:
                    data = rf.read(min(CHUNK, size - done))
                    if not data:
                        raise RemoteError(f"{rpath} shrank while it was downloaded ({done} of {size} bytes)")
                    lf.write(data)
                    done += len(data)
                    if progress:
                        progress(done, size)
                lf.flush()
                os.fsync(lf.fileno())
        finally:
            sftp.close()

    def _remote_prefix_matches(self, rpath: str, part: Path, n: int) -> bool:
        res = self._exec(f"head -c {n} {shlex.quote(rpath)} | sha256sum", 600.0, None)
        return res.exit_code == 0 and res.stdout.split()[:1] == [_sha256_prefix(part, n)]

    def read_bytes(self, remote: str, offset: int = 0) -> bytes | None:
        rpath = self._sftp_path(remote)

        def op() -> bytes | None:
            with self._lock:
                sftp = self._sftp_client()
                try:
                    with sftp.open(rpath, "rb") as fh:
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
                try:
                    self._sftp_client().stat(rpath)
                    return True
                except FileNotFoundError:
                    return False

        return self._with_retry(f"stat {remote}", op)


# --- helpers ------------------------------------------------------------------------------------------------------
@dataclass
class _Counters:
    """Bytes sent, shared by the upload channels; feeds the progress callback."""

    bytes: int = 0
    done: int = 0
    total: int = 0
    progress: ProgressFn | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, total: int, progress: ProgressFn | None) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def add(self, n: int) -> None:
        with self.lock:
            self.bytes += n
            self.done += n
            done, total = self.done, self.total
        if self.progress:
            self.progress(done, total)

    def report(self) -> None:
        if self.progress:
            self.progress(self.done, self.total)


def _upload_file(sftp: paramiko.SFTPClient, local: Path, rpath: str, offset: int, counters: _Counters) -> None:
    tmp = rpath + PART_SUFFIX
    # "r+" keeps the bytes already there (resume); "w" starts over.
    with sftp.open(tmp, "r+b" if offset else "wb") as rf, open(local, "rb") as lf:
        rf.set_pipelined(True)  # no round trip per write; errors surface at close
        rf.MAX_REQUEST_SIZE = SFTP_WRITE_SIZE
        if offset:
            rf.seek(offset)
            lf.seek(offset)
        while data := lf.read(CHUNK):
            rf.write(data)
            counters.add(len(data))
    sftp.posix_rename(tmp, rpath)


def local_manifest(root: Path) -> list[_LocalFile]:
    """Every regular file under `root`, sorted, with its sha256 (symlinked files are followed)."""
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not path.is_file() or name.endswith(PART_SUFFIX):
                continue
            rel = path.relative_to(root).as_posix()
            out.append(_LocalFile(rel, path, path.stat().st_size, sha256_file(path)))
    return out


def sha256_file(path: Path) -> str:
    return _sha256_prefix(path, None)


def _sha256_prefix(path: Path, n: int | None) -> str:
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
    return h.hexdigest()


def _shell_path(path: str) -> str:
    """Quote a remote path for the shell, leaving a leading REMOTE_WORKDIR_EXPR to be expanded."""
    if path.startswith(REMOTE_WORKDIR_EXPR):
        rest = path[len(REMOTE_WORKDIR_EXPR) :]
        return REMOTE_WORKDIR_EXPR + (shlex.quote(rest) if rest else "")
    return shlex.quote(path)


def _prefer(first: tuple[str, ...], available: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c for c in first if c in available) + tuple(c for c in available if c not in first)


def _load_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(str(path))
    except (OSError, paramiko.SSHException) as e:
        raise AuthenticationFailed(f"cannot load SSH key {path}: {e}") from e


# --- host key pinning ---------------------------------------------------------------------------------------------
_pin_lock = threading.Lock()


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _pinned_keys(known_hosts: Path, host: str, port: int) -> list[paramiko.PKey]:
    if not Path(known_hosts).exists():
        return []
    keys = paramiko.HostKeys(str(known_hosts)).lookup(_host_entry(host, port))
    return list(keys.values()) if keys else []


def _fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:..." as OpenSSH prints it


def _check_or_pin(known_hosts: Path, host: str, port: int, key: paramiko.PKey) -> None:
    """Trust on first use: save the first key seen for host:port; afterwards any other key is refused."""
    known_hosts = Path(known_hosts)
    with _pin_lock:
        pins = _pinned_keys(known_hosts, host, port)
        if pins:
            if any(p.get_name() == key.get_name() and p.asbytes() == key.asbytes() for p in pins):
                return
            raise HostKeyChanged(
                host, port, ", ".join(_fingerprint(p) for p in pins), _fingerprint(key), str(known_hosts)
            )
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        line = f"{_host_entry(host, port)} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line)
        log.info("pinned host key %s for %s:%d in %s", _fingerprint(key), host, port, known_hosts)
