"""Trust on first use, then pinned per job: a different host key is refused before anything is sent."""

from __future__ import annotations

import stat

import pytest

from lorarun.sshlink.errors import HostKeyChanged
from lorarun.sshlink.session import SSHTransport


def test_first_key_is_pinned_in_the_job_file(ssh_transport, ssh_params, sshd_server):
    ssh_transport.run("true")
    lines = ssh_params.known_hosts.read_text().splitlines()
    assert len(lines) == 1
    entry, kind, b64 = lines[0].split()
    assert entry == f"[127.0.0.1]:{sshd_server.port}"
    assert (kind, b64) == tuple(sshd_server.host_public_key.split()[:2])
    assert stat.S_IMODE(ssh_params.known_hosts.stat().st_mode) == 0o600


def test_same_key_connects_again_without_repinning(ssh_params, sshd_server):
    with SSHTransport(ssh_params) as t:
        t.run("true")
    before = ssh_params.known_hosts.read_text()
    sshd_server.restart()  # same host key
    with SSHTransport(ssh_params) as t:
        assert t.run("echo again").stdout == "again\n"
    assert ssh_params.known_hosts.read_text() == before


def test_a_new_host_key_on_the_same_address_is_refused(ssh_params, sshd_server, recorded_sleeps):
    with SSHTransport(ssh_params) as t:
        t.run("true")
    pinned = ssh_params.known_hosts.read_text()
    sshd_server.restart(new_host_key=True)
    marker = sshd_server.workdir / "ran"
    with SSHTransport(ssh_params, sleep=recorded_sleeps.append) as t:
        with pytest.raises(HostKeyChanged) as info:
            t.run(f"touch {marker}")
    assert not marker.exists(), "nothing may run on a host whose key changed"
    assert recorded_sleeps == [], "a changed key is not a transient failure"
    assert info.value.port == sshd_server.port
    assert info.value.expected != info.value.got and info.value.got.startswith("SHA256:")
    assert ssh_params.known_hosts.read_text() == pinned, "the pin is never overwritten"


def test_a_tampered_pin_file_is_refused(ssh_params, sshd_server, tmp_path):
    from lorarun.runner.remote.keys import write_job_keypair

    other = write_job_keypair(tmp_path / "other", "x").split()
    ssh_params.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    ssh_params.known_hosts.write_text(f"[127.0.0.1]:{sshd_server.port} {other[0]} {other[1]}\n")
    with SSHTransport(ssh_params) as t:
        with pytest.raises(HostKeyChanged):
            t.exists("/")


def test_pins_are_per_host_and_port(ssh_params, sshd_server, tmp_path):
    from lorarun.runner.remote.keys import write_job_keypair

    other = write_job_keypair(tmp_path / "other", "x").split()
    ssh_params.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    ssh_params.known_hosts.write_text(f"[127.0.0.1]:{sshd_server.port + 1} {other[0]} {other[1]}\n")
    with SSHTransport(ssh_params) as t:
        assert t.run("echo ok").stdout == "ok\n"
    assert len(ssh_params.known_hosts.read_text().splitlines()) == 2
