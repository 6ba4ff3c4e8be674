"""pytest fixtures around a real loopback sshd. Import them from a conftest: `from tests.support.fixtures import *`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorarun.sshlink.session import RetryPolicy, SSHParams, SSHTransport

from .sshd import FakeInstanceHost, SshdInfo, SshdServer, sshd_available

__all__ = [
    "sshd_server",
    "sshd_host",
    "fake_instance_host",
    "ssh_params",
    "ssh_transport",
    "recorded_sleeps",
    "make_ssh_params",
]


def _require_sshd() -> None:
    if not sshd_available():
        pytest.skip("OpenSSH sshd is not installed (apt-get install openssh-server)")


@pytest.fixture
def sshd_server(tmp_path: Path) -> Iterator[SshdServer]:
    """A running sshd for this test; stopped afterwards, and whatever it started is killed."""
    _require_sshd()
    server = SshdServer(tmp_path / "sshd", instance_id=f"test-{uuid.uuid4().hex[:10]}")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.kill_processes()


@pytest.fixture
def sshd_host(sshd_server: SshdServer) -> SshdInfo:
    return sshd_server.info


@pytest.fixture
def fake_instance_host(tmp_path: Path) -> Iterator[FakeInstanceHost]:
    _require_sshd()
    host = FakeInstanceHost(tmp_path / "fake-instances")
    try:
        yield host
    finally:
        host.close()


def make_ssh_params(info: SshdInfo, known_hosts: Path, *, key: Path | None = None) -> SSHParams:
    return SSHParams(
        host=info.host,
        port=info.port,
        username=info.username,
        key_path=key or info.client_key,
        known_hosts=known_hosts,
        connect_timeout=10.0,
        io_timeout=30.0,
    )


@pytest.fixture
def ssh_params(sshd_host: SshdInfo, tmp_path: Path) -> SSHParams:
    return make_ssh_params(sshd_host, tmp_path / "job" / "known_hosts")


@pytest.fixture
def recorded_sleeps() -> list[float]:
    return []


@pytest.fixture
def ssh_transport(ssh_params: SSHParams, recorded_sleeps: list[float]) -> Iterator[SSHTransport]:
    """An SSHTransport whose reconnect back-off is recorded instead of slept."""
    t = SSHTransport(ssh_params, retry=RetryPolicy(attempts=4, base_delay=0.5), sleep=recorded_sleeps.append)
    try:
        yield t
    finally:
        t.close()
