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

import contextlib
import hashlib
import logging
import os
import posixpath
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import paramiko

from lorarun.sshlink.errors import (
    AuthenticationFailed,
    ConnectionLost,
    HostKeyChanged,
    RemoteCommandError,
    RemoteError,
    RemoteTimeout,
    command_summary,
)
from lorarun.sshlink.hostkeys import algorithms_for, check_or_pin, pinned_keys
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

log = logging.getLogger(__name__)
# paramiko logs a dropped link as ERROR ("Socket exception: Connection reset by peer (104)"); with no logging set
# up, Python's last-resort handler printed that raw line under lorarun's own message (#27). Our errors say it in
# words; a program that configures logging still gets paramiko's records (they propagate as before).
logging.getLogger("paramiko").addHandler(logging.NullHandler())
T = TypeVar("T")

STDERR_TAIL_CHARS = 2000
# Our receive window and the largest packet we accept: big, so a download is never throttled by window updates.
WINDOW_SIZE = 1 << 27
MAX_PACKET = 1 << 15
UPLOAD_CHANNELS = 3  # parallel SFTP channels for many-file uploads: they overlap per-file round trips
# AEAD ciphers first: one pass instead of cipher + HMAC. paramiko's other ciphers follow as fallbacks.
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


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


class _Dropped(Exception):
    """Internal: the link is gone (raised where paramiko gives no typed error)."""


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
    def connect(self, *, once: bool = False) -> None:
        """Open the connection now (otherwise the first operation does). Retries per the policy, unless `once`: a
        caller that polls on its own (an instance still booting) wants each try to fail fast, not to sleep through
        the policy's backoff (1+2+4+8+16 s) before it may try the instance's next endpoint."""
        self._with_retry("connect", lambda: None, retry=not once)

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
        _tune_socket(sock, p)
        t = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET)
        t.banner_timeout = p.connect_timeout
        t.handshake_timeout = p.connect_timeout
        opts = t.get_security_options()
        opts.ciphers = _prefer(FAST_CIPHERS, opts.ciphers)
        pins = pinned_keys(p.known_hosts, p.host, p.port)
        if pins and (usable := algorithms_for(pins, opts.key_types)):
            opts.key_types = usable  # so a server with several host keys shows the one we pinned
        try:
            t.start_client(timeout=p.connect_timeout)
            check_or_pin(p.known_hosts, p.host, p.port, t.get_remote_server_key())
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
                        f"{what}: the connection dropped: SSH to {self.params.host}:{self.params.port} lost "
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
        sftp = paramiko.SFTPClient.from_transport(t, window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET)
        if sftp is None:
            raise _Dropped("could not open an SFTP channel")
        channel = sftp.get_channel()
        if channel is None:
            raise _Dropped("SFTP client without a channel")
        channel.settimeout(self.params.io_timeout)
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
        what = f"run {command_summary(command, 60)!r}"
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
            # The login shell first prints its pid: sshd made it a session (and process group) leader, so on a
            # timeout the whole command tree can be ended instead of left running on the machine.
            chan.exec_command(_PID_PREFIX + command)
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
                if (
                    chan.exit_status_ready()
                    and chan.eof_received
                    and not chan.recv_ready()
                    and not (chan.recv_stderr_ready())
                ):
                    break
                if not t.is_active():
                    raise _Dropped("connection closed while the command ran")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # Closing the channel alone does not end a command that has no tty: end its process group.
                    self._kill_group(t, _leading_pid(out))
                    raise RemoteTimeout(command, timeout)
                # The channel's fileno is signalled by stdout, stderr and close alike.
                select.select([chan], [], [], min(remaining, 1.0))
            code = chan.recv_exit_status()
            if code == -1 and _link_died(t):
                # The channel closed without an exit status because the connection went away (paramiko closes
                # the channels a moment before it marks the transport inactive). A -1 on a live link means the
                # command died of a signal (paramiko does not parse exit-signal) and is reported as such.
                raise _Dropped("connection closed before the command's exit status arrived")
            return CommandResult(code, _strip_pid(out).decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        finally:
            chan.close()

    def _kill_group(self, t: paramiko.Transport, pid: int | None) -> None:
        """Best effort: TERM the timed-out command's process group now, KILL it 5 s later (in the background,
        so the caller does not wait)."""
        if pid is None or not t.is_active():
            return
        script = (
            f"kill -TERM -- -{pid} 2>/dev/null; "
            f"(sleep 5; kill -KILL -- -{pid} 2>/dev/null) </dev/null >/dev/null 2>&1 &"
        )
        try:
            chan = t.open_session(timeout=self.params.connect_timeout)
            try:
                chan.exec_command(script)
                chan.recv_exit_status()
            finally:
                chan.close()
        except Exception as e:  # the timeout is what the caller hears about; this is cleanup
            log.warning("could not end timed-out remote command (pid %s): %s", pid, e)

    def start_detached(self, command: str, *, cwd: str, log_path: str) -> int:
        """Start `command` in its own session (setsid + nohup, stdin from /dev/null, output appended to
        `log_path`), so that it outlives this connection; return its pid (also its process group id).

        Not re-run after a drop once the command was sent: a second agent must never start.
        """
        q_cwd, q_log = _shell_path(cwd), _shell_path(log_path)
        script = (
            f'mkdir -p {q_cwd} && cd {q_cwd} && mkdir -p "$(dirname {q_log})" && '
            f"{{ setsid nohup sh -c {shlex.quote(command)} </dev/null >>{q_log} 2>&1 & }} && echo $!"
        )
        out = self.run(script, timeout=60, idempotent=False).stdout.strip()
        try:
            return int(out.splitlines()[-1])
        except (ValueError, IndexError) as e:
            raise RemoteError(f"start_detached: expected a pid, got {out!r}") from e

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
        res = self._exec(f"mkdir -p {_shell_path(root)} && {MANIFEST_COMMAND}", 600.0, manifest_request(root, files))
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
                    with _sftp_guard(sftp):
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
                with _sftp_guard(sftp):
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
            with _sftp_guard(sftp):
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
                    with _sftp_guard(sftp), sftp.open(rpath, "rb") as fh:
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
                    with _sftp_guard(sftp):
                        sftp.stat(rpath)
                    return True
                except FileNotFoundError:
                    return False

        return self._with_retry(f"stat {remote}", op)


# --- helpers ------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _sftp_guard(sftp: paramiko.SFTPClient) -> Iterator[None]:
    """An error on an SFTP channel that the server closed (its sftp-server died) is a dropped link, to be
    re-opened, not an answer about the file: the link-level check alone misses it, the connection lives on."""
    try:
        yield
    except OSError as e:
        channel = sftp.get_channel()
        if channel is None or channel.closed:
            raise _Dropped(f"SFTP channel closed by the server: {e}") from e
        raise


def _shell_path(path: str) -> str:
    """Quote a remote path for the shell, leaving a leading REMOTE_WORKDIR_EXPR to be expanded."""
    if path.startswith(REMOTE_WORKDIR_EXPR):
        rest = path[len(REMOTE_WORKDIR_EXPR) :]
        return REMOTE_WORKDIR_EXPR + (shlex.quote(rest) if rest else "")
    return shlex.quote(path)


_PID_PREFIX = "printf '%s\\n' \"$$\"; "


def _leading_pid(out: bytearray) -> int | None:
    first, newline, _ = bytes(out).partition(b"\n")
    return int(first) if newline and first.isdigit() else None


def _strip_pid(out: bytearray) -> bytes:
    first, newline, rest = bytes(out).partition(b"\n")
    return rest if newline and first.isdigit() else bytes(out)


def _link_died(t: paramiko.Transport, settle: float = 1.0) -> bool:
    """Whether the transport is dying, giving its reader thread `settle` seconds to say so."""
    deadline = time.monotonic() + settle
    while t.is_active():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _tune_socket(sock: socket.socket, p: SSHParams) -> None:
    """No Nagle delay for small requests; and let the kernel notice a peer that vanished without a word (a
    destroyed instance, a NAT that forgot us): TCP keep-alive probes, and a cap on how long sent data may stay
    unacknowledged. Either ends the socket, which paramiko reports as a dropped link, which we reconnect."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", 30),
        ("TCP_KEEPINTVL", 10),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", int(max(30.0, p.io_timeout) * 1000)),
    ):
        if hasattr(socket, name):  # Linux names; other systems keep their defaults
            try:
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
            except OSError:
                pass


def _prefer(first: Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    return tuple(c for c in first if c in available) + tuple(c for c in available if c not in first)


def _load_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(str(path))
    except (OSError, paramiko.SSHException) as e:
        raise AuthenticationFailed(f"cannot load SSH key {path}: {e}") from e
