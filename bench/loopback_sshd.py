"""The benchmarks' own OpenSSH `sshd` on 127.0.0.1: a throw-away server with fresh host and client keys.

bench/ imports nothing from tests/ (the tests' `tests/support/sshd.py` also plays a provider's instance: session
environment, process marking, fault injection; a benchmark needs none of that). Everything is given to sshd on its
command line (`-o`), so no config file is written and nothing of the machine's own sshd setup applies.

    with LoopbackSshd(root) as server:     # root: an empty temporary folder
        server.port, server.username, server.client_key, server.workdir, server.pid
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server")


def available() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None


class LoopbackSshd:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.workdir = self.root / "instance"  # where uploads go
        self.username = getpass.getuser()
        self.port = 0
        self._proc: subprocess.Popen | None = None

    @property
    def client_key(self) -> Path:
        return self.root / "client_ed25519"

    @property
    def pid(self) -> int:
        """The listener: each connection's sshd, sftp-server and commands are its children (CPU accounting)."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    def __enter__(self) -> LoopbackSshd:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 15.0) -> None:
        for folder in (self.root, self.workdir, self.root / "home"):
            folder.mkdir(parents=True, exist_ok=True)
        host_key = self.root / "host_ed25519"
        for key in (host_key, self.client_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        authorized = self.root / "authorized_keys"
        authorized.write_text(Path(f"{self.client_key}.pub").read_text())
        authorized.chmod(0o600)
        if os.geteuid() == 0:  # sshd started by root wants its privilege separation folder
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a free port may be taken by someone else before sshd binds it: try another
            if self._launch(host_key, authorized, timeout):
                return
        raise RuntimeError(f"sshd could not bind a port: {(self.root / 'sshd.log').read_text()[-2000:]}")

    def _launch(self, host_key: Path, authorized: Path, timeout: float) -> bool:
        sftp = next((p for p in SFTP_SERVERS if os.path.exists(p)), "internal-sftp")
        self.port = _free_port()
        options = {
            "ListenAddress": "127.0.0.1",
            "Port": str(self.port),
            "HostKey": str(host_key),
            "AuthorizedKeysFile": str(authorized),
            "PidFile": "none",
            "StrictModes": "no",  # temporary folders are not the home folder sshd expects
            "UsePAM": "no",
            "PasswordAuthentication": "no",
            "PermitRootLogin": "prohibit-password",
            "UseDNS": "no",
            "LogLevel": "ERROR",
            "MaxSessions": "64",  # put_tree's parallel SFTP channels
            "Subsystem": f"sftp {sftp}",  # the binary scp and real hosts use
            "SetEnv": f"HOME={self.root / 'home'}",  # no rc file of the real user runs in each remote command
        }
        argv = [SSHD, "-D", "-e", "-f", "/dev/null"] + [a for k, v in options.items() for a in ("-o", f"{k} {v}")]
        log_path = self.root / "sshd.log"
        log_start = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = log_path.read_bytes()[log_start:].decode(errors="replace")
                if "Address already in use" in tail:
                    return False
                raise RuntimeError(f"sshd exited: {tail[-2000:]}")
            if _answers_ssh(self.port):
                return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not answer on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers_ssh(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(0.5)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False
