"""Typed errors of the remote session (SSH commands, SFTP transfers, host keys).

The pipeline decides what to do by type, never by matching messages: a `ConnectionLost` is worth waiting for
(the instance may still be booting or the link blipped), a `HostKeyChanged` never is (someone else answers on that
address), a `RemoteCommandError` carries the exit code and the end of stderr so the user sees why.
"""
from __future__ import annotations


class RemoteError(Exception):
    """Anything that went wrong on or on the way to the remote machine."""


class RemoteCommandError(RemoteError):
    """A remote command exited non-zero."""

    def __init__(self, command: str, exit_code: int, stderr_tail: str, stdout: str = ""):
        self.command = command
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.stdout = stdout
        # The command can be long (scripts); its first line is enough to recognise it.
        first_line = command.strip().splitlines()[0] if command.strip() else command
        if len(first_line) > 120:
            first_line = first_line[:117] + "..."
        detail = f": {stderr_tail.strip()}" if stderr_tail.strip() else ""
        super().__init__(f"remote command exited {exit_code} ({first_line}){detail}")


class RemoteTimeout(RemoteError):
    """A remote command did not finish in time."""

    def __init__(self, command: str, timeout: float):
        self.command = command
        self.timeout = timeout
        first_line = command.strip().splitlines()[0] if command.strip() else command
        super().__init__(f"remote command timed out after {timeout:g}s ({first_line[:120]})")


class HostKeyChanged(RemoteError):
    """The host answered with a key other than the one pinned for this job: never connect through it."""

    def __init__(self, host: str, port: int, expected: str, got: str, known_hosts: str):
        self.host = host
        self.port = port
        self.expected = expected
        self.got = got
        self.known_hosts = known_hosts
        super().__init__(
            f"host key of {host}:{port} changed: pinned {expected}, got {got} (pinned in {known_hosts}); "
            "refusing to connect"
        )


class AuthenticationFailed(RemoteError):
    """The host refused our key (on a fresh instance the key may not be installed yet)."""


class ConnectionLost(RemoteError):
    """The SSH connection could not be made or dropped, and reconnecting did not help within the retry policy."""
