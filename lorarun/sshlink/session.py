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

import logging
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
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
from lorarun.sshlink.sftp_transfers import STDERR_TAIL_CHARS, LinkDropped, SFTPTransfers, shell_path
from lorarun.sshlink.transport import REMOTE_WORKDIR_EXPR, CommandResult

log = logging.getLogger(__name__)
# paramiko logs a dropped link as ERROR ("Socket exception: Connection reset by peer (104)"); with no logging set
# up, Python's last-resort handler printed that raw line under lorarun's own message (#27). Our errors say it in
# words; a program that configures logging still gets paramiko's records (they propagate as before).
logging.getLogger("paramiko").addHandler(logging.NullHandler())
T = TypeVar("T")

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


class SSHTransport(SFTPTransfers):
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
            raise LinkDropped(f"cannot reach {p.host}:{p.port}: {e}") from e
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
            raise LinkDropped(f"SSH handshake with {p.host}:{p.port} failed: {e}") from e
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
        if isinstance(e, (LinkDropped, EOFError, socket.timeout, ConnectionError, paramiko.SSHException)):
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
            raise LinkDropped("could not open an SFTP channel")
        channel = sftp.get_channel()
        if channel is None:
            raise LinkDropped("SFTP client without a channel")
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
                    raise LinkDropped("connection closed while the command ran")
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
                raise LinkDropped("connection closed before the command's exit status arrived")
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
        q_cwd, q_log = shell_path(cwd), shell_path(log_path)
        script = (
            f'mkdir -p {q_cwd} && cd {q_cwd} && mkdir -p "$(dirname {q_log})" && '
            f"{{ setsid nohup sh -c {shlex.quote(command)} </dev/null >>{q_log} 2>&1 & }} && echo $!"
        )
        out = self.run(script, timeout=60, idempotent=False).stdout.strip()
        try:
            return int(out.splitlines()[-1])
        except (ValueError, IndexError) as e:
            raise RemoteError(f"start_detached: expected a pid, got {out!r}") from e


# --- helpers ------------------------------------------------------------------------------------------------------
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
