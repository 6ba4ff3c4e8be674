"""The per-job key pair: format, permissions, reuse, and that OpenSSH itself accepts it."""

from __future__ import annotations

import shutil
import stat
import subprocess

import paramiko
import pytest
from support.fixtures import make_ssh_params

from lorarun.runner.remote.keys import private_key_path, public_key_path, write_job_keypair
from lorarun.sshlink.session import SSHTransport


def test_writes_an_ed25519_pair_with_the_job_comment(tmp_path):
    pub = write_job_keypair(tmp_path / "keys", "job42")
    kind, b64, comment = pub.split(" ")
    assert (kind, comment) == ("ssh-ed25519", "lorarun-job42") and b64.startswith("AAAA")
    assert stat.S_IMODE(private_key_path(tmp_path / "keys").stat().st_mode) == 0o600
    assert private_key_path(tmp_path / "keys").read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert public_key_path(tmp_path / "keys").read_text().strip() == pub
    key = paramiko.PKey.from_path(str(private_key_path(tmp_path / "keys")))
    assert key.get_base64() == b64


def test_is_reused_when_it_exists_and_differs_between_jobs(tmp_path):
    first = write_job_keypair(tmp_path / "a", "j1")
    assert write_job_keypair(tmp_path / "a", "j1") == first
    assert write_job_keypair(tmp_path / "b", "j2").split()[1] != first.split()[1]


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_openssh_reads_the_private_key(tmp_path):
    pub = write_job_keypair(tmp_path, "j1")
    out = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private_key_path(tmp_path))], capture_output=True, text=True, check=True
    ).stdout
    assert out.split()[:2] == pub.split()[:2]


def test_sshd_accepts_the_job_key(sshd_server, tmp_path):
    pub = write_job_keypair(tmp_path / "jobkeys", "j9")
    sshd_server.add_authorized_key(pub)
    params = make_ssh_params(sshd_server.info, tmp_path / "kh", key=private_key_path(tmp_path / "jobkeys"))
    with SSHTransport(params) as t:
        assert t.run("echo in").stdout == "in\n"
