"""The test double for rented machines: each instance is a real sshd; destroying it ends everything it ran."""

from __future__ import annotations

import time
from pathlib import Path

from lorarun.runner.remote.keys import private_key_path, write_job_keypair
from lorarun.sshlink.errors import ConnectionLost
from lorarun.sshlink.session import RetryPolicy, SSHParams, SSHTransport


def _transport(host, port, key, tmp_path, name="kh") -> SSHTransport:
    params = SSHParams(
        host=host,
        port=port,
        username=__import__("getpass").getuser(),
        key_path=key,
        known_hosts=tmp_path / name,
        connect_timeout=5,
    )
    return SSHTransport(params, retry=RetryPolicy(attempts=2, base_delay=0), sleep=lambda s: None)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_instance_gets_the_key_and_env_and_destroy_ends_everything(fake_instance_host, tmp_path):
    pub = write_job_keypair(tmp_path / "job", "j1")
    host, port = fake_instance_host.on_create("C.123", (("CONTAINER_ID", "123"), ("CONTAINER_API_KEY", "k x")), pub)
    assert host == "127.0.0.1"
    t = _transport(host, port, private_key_path(tmp_path / "job"), tmp_path)
    env = t.run('printf "%s|%s|%s" "$CONTAINER_ID" "$CONTAINER_API_KEY" "$LORARUN_FAKE_INSTANCE"').stdout
    assert env == "123|k x|C.123"
    workdir = fake_instance_host.workdir("C.123")
    pid = t.start_detached("exec sleep 300", cwd=str(workdir / "j1"), log_path=str(workdir / "j1" / "a.log"))
    assert Path(f"/proc/{pid}").exists()

    fake_instance_host.on_destroy("C.123")
    assert _wait(lambda: not _alive(pid)), "the detached process died with its instance"
    assert not fake_instance_host.alive("C.123")
    t.close()
    try:
        t.run("true")
        raise AssertionError("the instance is gone; SSH must fail")
    except ConnectionLost:
        pass
    fake_instance_host.on_destroy("C.123")  # idempotent


def test_instances_are_separate(fake_instance_host, tmp_path):
    pub = write_job_keypair(tmp_path / "job", "j1")
    a = fake_instance_host.on_create("A", (), pub)
    b = fake_instance_host.on_create("B", {}, pub)
    assert a[1] != b[1]
    key = private_key_path(tmp_path / "job")
    ta, tb = _transport(*a, key, tmp_path, "ka"), _transport(*b, key, tmp_path, "kb")
    pid_b = tb.start_detached("exec sleep 300", cwd=str(fake_instance_host.workdir("B")), log_path="/dev/null")
    fake_instance_host.on_destroy("A")
    assert _alive(pid_b), "destroying A leaves B's processes alone"
    assert tb.run("echo b").stdout == "b\n"
    ta.close()
    tb.close()


def test_drop_connections_keeps_the_host_up(fake_instance_host, tmp_path):
    pub = write_job_keypair(tmp_path / "job", "j1")
    host, port = fake_instance_host.on_create("D", (), pub)
    t = _transport(host, port, private_key_path(tmp_path / "job"), tmp_path)
    t.run("true")
    assert fake_instance_host.drop_connections("D") > 0
    assert t.run("echo again").stdout == "again\n"
    t.close()


def test_kill_processes_hits_only_the_named_instance(fake_instance_host, tmp_path):
    pub = write_job_keypair(tmp_path / "job", "j1")
    key = private_key_path(tmp_path / "job")
    ta = _transport(*fake_instance_host.on_create("E1", (), pub), key, tmp_path, "k1")
    tb = _transport(*fake_instance_host.on_create("E2", (), pub), key, tmp_path, "k2")
    cmd = "exec sleep 301"
    a = ta.start_detached(cmd, cwd=str(fake_instance_host.workdir("E1")), log_path="/dev/null")
    other = ta.start_detached("exec sleep 302", cwd=str(fake_instance_host.workdir("E1")), log_path="/dev/null")
    b = tb.start_detached(cmd, cwd=str(fake_instance_host.workdir("E2")), log_path="/dev/null")
    for pid in (a, other, b):  # wait until the shells have exec'd into sleep: command lines are final then
        assert _wait(lambda pid=pid: b"sleep" in _cmdline(pid))
    assert fake_instance_host.kill_processes("E1", "sleep 301") == [a]
    assert _wait(lambda: not _alive(a))
    assert _alive(other) and _alive(b)
    ta.close()
    tb.close()


def test_same_instance_id_on_two_fake_hosts_are_independent(tmp_path):
    """Fake providers number instances alike (every fake Vast starts at 8000001) and tests of several people
    share a machine: destroying one host's 8000001 must not touch another's."""
    from support.sshd import FakeInstanceHost, sshd_available

    if not sshd_available():
        import pytest

        pytest.skip("sshd not installed")
    pub = write_job_keypair(tmp_path / "job", "j1")
    key = private_key_path(tmp_path / "job")
    one, two = FakeInstanceHost(tmp_path / "one"), FakeInstanceHost(tmp_path / "two")
    try:
        t1 = _transport(*one.on_create("8000001", (), pub), key, tmp_path, "k1")
        t2 = _transport(*two.on_create("8000001", (), pub), key, tmp_path, "k2")
        p1 = t1.start_detached("exec sleep 303", cwd=str(one.workdir("8000001")), log_path="/dev/null")
        p2 = t2.start_detached("exec sleep 303", cwd=str(two.workdir("8000001")), log_path="/dev/null")
        one.on_destroy("8000001")
        assert _wait(lambda: not _alive(p1))
        assert _alive(p2)
        assert t2.run("echo still").stdout == "still\n"
        t1.close()
        t2.close()
    finally:
        one.close()
        two.close()
