"""A real OpenSSH `sshd` on 127.0.0.1 for tests, and `FakeInstanceHost`, the "machine" behind fake providers.

Each server gets its own temporary folder with a host key, an authorized_keys file, a config and a log. Sessions
get `LORARUN_WORKDIR` (the instance's disk), `LORARUN_PYTHON` (this interpreter, so the agent can import lorarun)
and `LORARUN_FAKE_INSTANCE=<id>` and `LORARUN_FAKE_HOST=<token unique to this sshd>` through `SetEnv`; every
process started over SSH inherits them, which is how `FakeInstanceHost.on_destroy` finds and kills what ran "on
the instance" (the detached agent and engine too). Kills go by the unique token, never by the instance id alone:
fake providers number their instances alike (every fake Vast starts at 8000001), and tests of several people run
on one machine at once.
Nothing here listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from lorarun.runner.remote.keys import private_key_path, write_job_keypair

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SFTP_SERVER_CANDIDATES = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/libexec/sftp-server",
)


def sshd_available() -> bool:
    return os.path.exists(SSHD)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quote_env(key: str, value: str) -> str:
    # sshd_config splits on whitespace; double quotes keep a value with spaces in one piece.
    if any(c in value for c in ' \t"'):
        value = value.replace('"', "")
        return f'"{key}={value}"'
    return f"{key}={value}"


@dataclass(frozen=True)
class SshdInfo:
    host: str
    port: int
    username: str
    client_key: Path  # private key that the server accepts
    workdir: Path  # what LORARUN_WORKDIR points at
    instance_id: str


class SshdServer:
    """One sshd process. `start()` / `stop()` / `restart(new_host_key=...)`; `drop_connections()` for fault tests."""

    def __init__(
        self,
        root: Path,
        *,
        instance_id: str = "test",
        authorized_keys: tuple[str, ...] = (),
        env: tuple[tuple[str, str], ...] = (),
        port: int | None = None,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.instance_id = instance_id
        self.token = f"{_safe_name(instance_id)}-{uuid.uuid4().hex[:12]}"
        self.env = tuple(env)
        self.port = port or free_port()
        # A port we picked may be taken by someone else before sshd binds it: then another is tried. Once sshd
        # has run on a port (or the caller chose it) it stays, so a restart answers where clients expect it.
        self._port_fixed = port is not None
        self.username = getpass.getuser()
        self.workdir = self.root / "instance"
        self.workdir.mkdir(exist_ok=True)
        # Sessions get their own HOME: the login shell then reads no rc file of the real user (root's pyenv
        # init costs time per command, and a session killed mid-`pyenv rehash` leaves a lock that stalls every
        # later shell for 60 s), and nothing a test runs writes into the real home.
        self.home = self.root / "home"
        self.home.mkdir(exist_ok=True)
        self.host_key_dir = self.root / "hostkey"
        self.client_key_dir = self.root / "client"
        self.authorized_keys = self.root / "authorized_keys"
        self.config = self.root / "sshd_config"
        self.log = self.root / "sshd.log"
        self.pidfile = self.root / "sshd.pid"
        self._proc: subprocess.Popen | None = None
        self._spawned: list[subprocess.Popen] = []
        self._log_fh = None
        self._make_host_key()
        client_pub = write_job_keypair(self.client_key_dir, f"client-{instance_id}")
        self.authorized_keys.write_text("".join(k.strip() + "\n" for k in (client_pub, *authorized_keys)))
        os.chmod(self.authorized_keys, 0o600)

    # --- keys -------------------------------------------------------------------------------------------------
    def _make_host_key(self) -> None:
        if self.host_key_dir.exists():
            shutil.rmtree(self.host_key_dir)
        write_job_keypair(self.host_key_dir, f"host-{self.instance_id}")

    @property
    def host_key_path(self) -> Path:
        return private_key_path(self.host_key_dir)

    @property
    def host_public_key(self) -> str:
        return (self.host_key_dir / "id_ed25519.pub").read_text().strip()

    @property
    def client_key(self) -> Path:
        return private_key_path(self.client_key_dir)

    def add_authorized_key(self, public_key: str) -> None:
        with open(self.authorized_keys, "a") as fh:
            fh.write(public_key.strip() + "\n")

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def spawn(self, argv: list[str] | tuple[str, ...]) -> subprocess.Popen:
        """Start a process "on the instance" the way its image's start-up would: with the instance's environment
        only (what SetEnv gives SSH sessions; never the test process's own variables, which hold account keys),
        in its own session, marked so that `kill_processes()` and a destroy end it. Output goes to boot.log."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self._session_env()}
        with open(self.root / "boot.log", "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._spawned.append(proc)
        return proc

    def _session_env(self) -> dict[str, str]:
        envs = {
            "HOME": str(self.home),
            "LORARUN_WORKDIR": str(self.workdir),
            "LORARUN_PYTHON": sys.executable,
            "LORARUN_FAKE_INSTANCE": self.instance_id,
            "LORARUN_FAKE_HOST": self.token,
        }
        envs.update(self.env)  # the caller's pairs win (a test may point HOME or PATH elsewhere)
        return envs

    def _write_config(self) -> None:
        sftp = next((p for p in SFTP_SERVER_CANDIDATES if os.path.exists(p)), None)
        envs = self._session_env()
        lines = [
            "ListenAddress 127.0.0.1",
            f"Port {self.port}",
            f"HostKey {self.host_key_path}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"PidFile {self.pidfile}",
            "StrictModes no",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "LogLevel ERROR",
            # Parallel SFTP channels and several test connections at once.
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            # The sftp-server binary (not internal-sftp) is what scp and real hosts use; internal-sftp is the
            # fallback where the binary is not installed.
            f"Subsystem sftp {sftp or 'internal-sftp'}",
            "SetEnv " + " ".join(_quote_env(k, v) for k, v in envs.items()),
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 15.0) -> SshdInfo:
        for _ in range(5):
            try:
                info = self._start_once(timeout)
            except _PortTaken:
                self.port = free_port()
                continue
            self._port_fixed = True
            return info
        raise RuntimeError(f"sshd could not bind a free port: {self.log.read_text()[-2000:]}")

    def _start_once(self, timeout: float) -> SshdInfo:
        if os.geteuid() == 0:  # sshd started by root wants its privilege separation dir
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self._write_config()
        log_start = self.log.stat().st_size if self.log.exists() else 0
        deadline = time.monotonic() + timeout
        self._log_fh = open(self.log, "ab")
        self._proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=self._log_fh,
            start_new_session=True,  # a Ctrl-C in pytest must not reach it before the fixture stops it
        )
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._close_log()
                self._proc = None
                with open(self.log, "rb") as fh:
                    fh.seek(log_start)
                    tail = fh.read().decode(errors="replace")
                if "Address already in use" in tail and not self._port_fixed:
                    raise _PortTaken(tail)
                raise RuntimeError(f"sshd exited with {code}: {tail[-2000:]}")
            if _answers_ssh(self.port):
                return self.info
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not answer on 127.0.0.1:{self.port}: {self.log.read_text()[-2000:]}")

    @property
    def info(self) -> SshdInfo:
        return SshdInfo("127.0.0.1", self.port, self.username, self.client_key, self.workdir, self.instance_id)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def running(self) -> bool:
        return self.pid is not None

    def stop(self) -> None:
        """Stop the listener and every connection it serves (session processes die with their connection)."""
        if self._proc is None:
            return
        listener = self._proc.pid
        children = _descendants(listener)
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        for pid in children:
            _kill(pid, signal.SIGKILL)
        self._proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None

    def restart(self, *, new_host_key: bool = False) -> SshdInfo:
        """Same port; with `new_host_key`, a different host key (the "someone else answers there" case)."""
        self.stop()
        if new_host_key:
            self._make_host_key()
        return self.start()

    def drop_connections(self) -> int:
        """Kill the per-connection sshd processes: live SSH links drop, the listener still takes new ones.

        Processes that detached themselves (setsid, reparented to init) are not descendants any more and
        survive, as they would on a real host whose network blipped. Returns how many processes were killed.
        """
        if self._proc is None:
            return 0
        victims = _children(self._proc.pid)
        for pid in victims:
            _kill(pid, signal.SIGKILL)
            _kill(pid, signal.SIGCONT)  # a frozen process only dies once it runs again
        return len(victims)

    def kill_processes(self, cmdline_contains: str | None = None, sig: int = signal.SIGKILL) -> list[int]:
        """Signal what this server's sessions started (only command lines containing `cmdline_contains`)."""
        killed = kill_marked_processes(self.token, cmdline_contains=cmdline_contains, sig=sig)
        for proc in self._spawned:
            if proc.pid in killed:
                try:
                    proc.wait(5)  # reap it: a zombie would still show in /proc
                except subprocess.TimeoutExpired:
                    pass
        return killed

    def freeze_connections(self) -> list[int]:
        """SIGSTOP the per-connection processes: live links go silent (no reset, no FIN), like a peer behind a
        NAT that forgot the flow. `drop_connections()` or `stop()` ends them afterwards."""
        if self._proc is None:
            return []
        frozen = _children(self._proc.pid)
        for pid in frozen:
            _kill(pid, signal.SIGSTOP)
        return frozen


class FakeInstanceHost:
    """The machines behind a fake provider: one sshd per instance id, started by `on_create`.

    `on_create(instance_id, env, public_key) -> (host, port)`: the provider's public key goes into
    authorized_keys and `env` becomes extra SetEnv pairs (e.g. CONTAINER_ID, CONTAINER_API_KEY).
    `on_destroy(instance_id)`: stops that sshd and kills every process that carries its
    `LORARUN_FAKE_INSTANCE=<id>` marker. Idempotent.
    """

    def __init__(self, root: Path | None = None):
        self._own_root = root is None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="lorarun-fakehost-"))
        self.servers: dict[str, SshdServer] = {}
        # What the image's start-up runs at boot, before any controller connects (e.g. `lorarun-agent watchdog`,
        # as image/instance/startup/lorarun-startup.sh starts it); None: nothing.
        self.boot_command: tuple[str, ...] | None = None
        # Pairs every instance's sessions get besides the create call's env (a test's hold points, for example).
        self.extra_env: dict[str, str] = {}
        self._destroyed: dict[str, threading.Event] = {}
        self._destroyed_lock = threading.Lock()

    def _destroyed_event(self, instance_id: str) -> threading.Event:
        with self._destroyed_lock:
            return self._destroyed.setdefault(str(instance_id), threading.Event())

    def wait_destroyed(self, instance_id: str, timeout: float) -> bool:
        """Block until the provider destroyed `instance_id` (its fake forgot it, then on_destroy stopped its sshd
        and processes); False after `timeout`. An event, not a poll: nothing to miss between two looks."""
        return self._destroyed_event(instance_id).wait(timeout)

    def on_create(self, instance_id: str, env: tuple[tuple[str, str], ...] | dict, public_key: str) -> tuple[str, int]:
        items = (tuple(env.items()) if isinstance(env, dict) else tuple(env)) + tuple(self.extra_env.items())
        server = SshdServer(
            self.root / _safe_name(instance_id), instance_id=instance_id, authorized_keys=(public_key,), env=items
        )
        self.servers[instance_id] = server
        info = server.start()
        if self.boot_command:
            server.spawn(self.boot_command)
        return info.host, info.port

    def on_destroy(self, instance_id: str) -> None:
        server = self.servers.get(instance_id)
        if server is not None:
            server.stop()
            server.kill_processes()
        self._destroyed_event(instance_id).set()

    def vanish(self, instance_id: str) -> None:
        """The machine disappears without anyone asking: same effect on processes as a destroy."""
        self.on_destroy(instance_id)

    def kill_processes(self, instance_id: str, cmdline_contains: str, sig: int = signal.SIGKILL) -> list[int]:
        """Kill some processes of one instance only (e.g. its engine: "lorarun.image.engine train").

        Fault tests must kill "the engine on the instance" this way, never with `pkill -f` over SSH: the
        loopback instances share one machine, so a pattern kill also hits every other test's (and person's)
        engine."""
        server = self.servers.get(instance_id)
        return server.kill_processes(cmdline_contains, sig) if server else []

    def drop_connections(self, instance_id: str) -> int:
        server = self.servers.get(instance_id)
        return server.drop_connections() if server else 0

    def workdir(self, instance_id: str) -> Path:
        return self.servers[instance_id].workdir

    def alive(self, instance_id: str) -> bool:
        server = self.servers.get(instance_id)
        return bool(server and server.running())

    def close(self) -> None:
        for instance_id in list(self.servers):
            self.on_destroy(instance_id)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


class _PortTaken(Exception):
    """sshd could not bind the port we picked: someone took it in between."""


def kill_marked_processes(token: str, *, cmdline_contains: str | None = None, sig: int = signal.SIGKILL) -> list[int]:
    """Signal every process whose environment carries `LORARUN_FAKE_HOST=<token>` (only those whose command line
    contains `cmdline_contains`, when given); returns their pids."""
    marker = f"LORARUN_FAKE_HOST={token}".encode()
    killed = []
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker not in environ.split(b"\0"):
            continue
        if cmdline_contains is not None and cmdline_contains not in cmdline:
            continue
        _kill(pid, sig)
        killed.append(pid)
    return killed


def _safe_name(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s) or "instance"


def _answers_ssh(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(1)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> list[int]:
    return [p for p in _all_pids() if _ppid(p) == pid]


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    parents = {p: _ppid(p) for p in _all_pids()}
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        out.extend(kids)
        todo.extend(kids)
    return out


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
