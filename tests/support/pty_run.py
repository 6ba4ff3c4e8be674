"""Run `lorarun` under a pseudo-terminal, as a user at a terminal would: prompts appear, rich draws its live
bars, and answers are typed. A small expect loop (no pexpect dependency): read until a text shows, then reply."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\r")


class PtyProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None, columns: int = 120):
        master, slave = pty.openpty()
        import fcntl
        import struct
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        full_env = {**os.environ, **(env or {}), "TERM": "xterm-256color", "COLUMNS": str(columns)}
        full_env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lorarun.runner.cli.app", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=full_env,
            cwd=cwd,
            close_fds=True,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.raw = b""

    @property
    def text(self) -> str:
        """Everything shown so far, without colour and cursor codes."""
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.raw += chunk
        return bool(chunk)

    def expect(self, pattern: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} did not show within {timeout}s; screen so far:\n{self.text[-3000:]}")
            if not self._read(0.2) and self.proc.poll() is not None and not self._read(0.2):
                raise AssertionError(f"exited ({self.proc.returncode}) before {pattern!r} showed:\n{self.text[-3000:]}")

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\r").encode())

    def wait(self, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"still running after {timeout}s:\n{self.text[-3000:]}")
            self._read(0.2)
        while self._read(0.1):
            pass
        os.close(self.master)
        return self.proc.returncode
