"""The `ssh` provider against a real loopback sshd: offers from nvidia-smi (or CPU only), create at once,
destroy = the job's process group and folder and nothing else."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.fixtures import make_ssh_params
from support.sshd import SshdServer, sshd_available

from lorarun.provider_adapters.base import LABEL_PREFIX, InstanceSpec, InstanceStatus, Offer, Provider, ResourceRequest
from lorarun.provider_adapters.errors import AuthError, ProviderError, TransientError
from lorarun.provider_adapters.ssh import CPU_ONLY, SSHHostConfig, SSHProvider, parse_nvidia_smi
from lorarun.runner.job.spec import Resources
from lorarun.runner.remote.keys import private_key_path, write_job_keypair
from lorarun.sshlink.session import SSHTransport


def _provider(server: SshdServer, tmp_path: Path, sleeps: list[float] | None = None, **kw) -> SSHProvider:
    info = server.info
    config = SSHHostConfig(host=info.host, port=info.port, user=info.username, key_path=info.client_key, **kw)
    return SSHProvider(config, known_hosts=tmp_path / "pins", sleep=(sleeps if sleeps is not None else []).append)


def _spec(job_id: str) -> InstanceSpec:
    return InstanceSpec(label=LABEL_PREFIX + job_id, image="unused", disk_gb=40, ssh_public_key="ssh-ed25519 AAAA x")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(pred, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_satisfies_the_provider_protocol(sshd_server, tmp_path):
    assert isinstance(_provider(sshd_server, tmp_path), Provider)


def test_parse_nvidia_smi():
    assert parse_nvidia_smi("NVIDIA GeForce RTX 4090, 24564 MiB\n") == ("NVIDIA GeForce RTX 4090", 1, 24.0)
    two = "NVIDIA A100-SXM4-80GB, 81920 MiB\nNVIDIA A100-SXM4-80GB, 81920 MiB\n"
    assert parse_nvidia_smi(two) == ("NVIDIA A100-SXM4-80GB", 2, 80.0)
    assert parse_nvidia_smi("") == (CPU_ONLY, 0, 0.0)
    assert parse_nvidia_smi("No devices were found\n") == (CPU_ONLY, 0, 0.0)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_offers_without_nvidia_smi_is_cpu_only(sshd_server, tmp_path):
    offers = _provider(sshd_server, tmp_path, price_per_hour=0.25).offers(ResourceRequest())
    assert len(offers) == 1
    o = offers[0]
    assert (o.provider, o.gpu_name, o.gpu_count, o.vram_gb, o.price_per_hour) == ("ssh", CPU_ONLY, 0, 0.0, 0.25)


@pytest.fixture
def gpu_server(tmp_path):
    """An sshd whose sessions find a fake nvidia-smi first on PATH."""
    if not sshd_available():
        pytest.skip("sshd not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 4090, 24564 MiB'\necho 'NVIDIA GeForce RTX 4090, 24564 MiB'\n")
    smi.chmod(0o755)
    server = SshdServer(
        tmp_path / "gpu-sshd",
        instance_id=f"gpu-{os.getpid()}",
        env=(("PATH", f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"),),
    )
    server.start()
    yield server
    server.stop()


def test_offers_report_the_gpus(gpu_server, tmp_path):
    (o,) = _provider(gpu_server, tmp_path).offers(ResourceRequest(gpu_names=("A100",)))
    assert (o.gpu_name, o.gpu_count, o.vram_gb, o.price_per_hour) == ("NVIDIA GeForce RTX 4090", 2, 24.0, 0.0)


def test_create_returns_the_host_at_once_without_connecting(tmp_path):
    provider = SSHProvider(SSHHostConfig(host="127.0.0.1", port=1, key_path=tmp_path / "k"), known_hosts=tmp_path / "p")
    offer = Offer(provider="ssh", id="x", gpu_name="RTX 3090", gpu_count=1, vram_gb=24, price_per_hour=0)
    inst = provider.create(offer, _spec("job1"))
    assert (inst.id, inst.status, inst.gpu_name) == ("lorarun-job1", InstanceStatus.RUNNING, "RTX 3090")
    assert (inst.ssh.host, inst.ssh.port) == ("127.0.0.1", 1)
    assert dict(inst.extra)["ssh_key_path"] == str(tmp_path / "k")
    assert provider.get("lorarun-job1").status == InstanceStatus.RUNNING
    assert provider.self_destruct() is None
    assert provider.key_path == tmp_path / "k"


def _start_job(server: SshdServer, tmp_path: Path, job_id: str) -> tuple[int, int]:
    """A fake agent (writes agent.pid, leads its group) with a fake engine child; returns (agent, engine) pids."""
    job = server.workdir / job_id
    with SSHTransport(make_ssh_params(server.info, tmp_path / f"kh-{job_id}")) as t:
        agent = t.start_detached(
            "echo $$ > agent.pid; sleep 300 & echo $! > engine.pid; wait", cwd=str(job), log_path=str(job / "agent.log")
        )
    assert _wait(lambda: (job / "engine.pid").exists() and (job / "engine.pid").read_text().strip())
    return agent, int((job / "engine.pid").read_text())


def test_destroy_kills_the_job_and_removes_only_its_folder(sshd_server, tmp_path):
    provider = _provider(sshd_server, tmp_path)
    agent1, engine1 = _start_job(sshd_server, tmp_path, "job1")
    agent2, engine2 = _start_job(sshd_server, tmp_path, "job10")  # a prefix of the other's name, on purpose
    keep = sshd_server.workdir / "user-file.txt"
    keep.write_text("mine")
    try:
        assert [i.id for i in provider.list_owned()] == ["lorarun-job1", "lorarun-job10"]
        provider.destroy("lorarun-job1")
        assert not _alive(agent1) and not _alive(engine1)
        assert not (sshd_server.workdir / "job1").exists()
        assert _alive(agent2) and _alive(engine2), "another job is not touched"
        assert (sshd_server.workdir / "job10" / "agent.pid").exists()
        assert keep.read_text() == "mine"
        assert provider.get("lorarun-job1") is None
        assert [i.id for i in provider.list_owned()] == ["lorarun-job10"]
        provider.destroy("lorarun-job1")  # idempotent: gone is success
    finally:
        for pid in (agent1, agent2):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_destroy_ignores_a_stale_pid_that_belongs_to_someone_else(sshd_server, tmp_path):
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True, cwd=tmp_path)
    try:
        job = sshd_server.workdir / "job2"
        job.mkdir()
        (job / "agent.pid").write_text(f"{stranger.pid}\n")
        _provider(sshd_server, tmp_path).destroy("lorarun-job2")
        assert not job.exists()
        assert stranger.poll() is None, "a process outside the job folder is never signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_unsafe_ids_are_refused_before_anything_runs(sshd_server, tmp_path):
    (sshd_server.workdir / "x").mkdir()
    provider = _provider(sshd_server, tmp_path)
    for bad in ("lorarun-../x", "lorarun-", "lorarun-a/b", "lorarun-.hidden"):
        with pytest.raises(ProviderError):
            provider.destroy(bad)
    assert (sshd_server.workdir / "x").exists()


def test_unreachable_host_is_a_transient_error_after_retries(tmp_path):
    sleeps: list[float] = []
    from socket import socket

    with socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    provider = SSHProvider(
        SSHHostConfig(host="127.0.0.1", port=port, key_path=tmp_path / "k"),
        known_hosts=tmp_path / "p",
        sleep=sleeps.append,
        connect_timeout=2,
    )
    with pytest.raises(TransientError):
        provider.offers(ResourceRequest())
    assert len(sleeps) >= 1, "retried through the adapters' retry policy, with the injected sleep"


def test_a_key_the_host_does_not_know_is_an_auth_error(sshd_server, tmp_path):
    write_job_keypair(tmp_path / "stranger", "x")
    info = sshd_server.info
    provider = SSHProvider(
        SSHHostConfig(
            host=info.host, port=info.port, user=info.username, key_path=private_key_path(tmp_path / "stranger")
        ),
        known_hosts=tmp_path / "p",
        sleep=lambda s: None,
    )
    with pytest.raises(AuthError):
        provider.list_owned()


def test_from_resources_and_kill_hint(tmp_path):
    res = Resources(
        provider="ssh",
        ssh_host="gpu.example",
        ssh_port=2222,
        ssh_user="me",
        ssh_key=str(tmp_path / "id"),
        price_per_hour=0.1,
    )
    provider = SSHProvider.from_resources(res, home=tmp_path)
    assert provider.config == SSHHostConfig("gpu.example", 2222, "me", tmp_path / "id", 0.1)
    hint = provider.kill_hint("lorarun-job5")
    assert hint.startswith("ssh -p 2222") and "me@gpu.example" in hint and "job5" in hint
