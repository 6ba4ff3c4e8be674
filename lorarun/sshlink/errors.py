"""Typed errors of the remote session (SSH commands, SFTP transfers, host keys).

The pipeline decides what to do by type, never by matching messages: a `ConnectionLost` is worth waiting for
(the instance may still be booting or the link blipped), a `HostKeyChanged` never is (someone else answers on that
address), a `RemoteCommandError` carries the exit code and the end of stderr so the user sees why.
"""

from __future__ import annotations

import re

# Values that must not reach a log or an error message even when a command carries them.
_SECRET_ASSIGNMENT = re.compile(r"\b([A-Za-z_]*(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD)[A-Za-z_]*)=(\S+)", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def redact(text: str) -> str:
    """`X_API_KEY=abc` -> `X_API_KEY=***`, `Bearer abc` -> `Bearer ***`."""
    return _BEARER.sub(r"\1***", _SECRET_ASSIGNMENT.sub(r"\1=***", text))


def command_summary(command: str, limit: int = 120) -> str:
    """The first line of a command, redacted and shortened, to name it in messages."""
    lines = command.strip().splitlines()
    first = redact(lines[0] if lines else command)
    return first if len(first) <= limit else first[: limit - 3] + "..."


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
        detail = f": {redact(stderr_tail.strip())}" if stderr_tail.strip() else ""
        super().__init__(f"remote command exited {exit_code} ({command_summary(command)}){detail}")


class RemoteTimeout(RemoteError):
    """A remote command did not finish in time."""

    def __init__(self, command: str, timeout: float):
        self.command = command
        self.timeout = timeout
        super().__init__(f"remote command timed out after {timeout:g}s ({command_summary(command)})")


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
