"""`lorarun submit` with `provider: ssh` against a real loopback sshd standing in for the user's own machine."""

from __future__ import annotations

import pytest
from support.cloud import tiny_job

from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def test_submit_to_an_owned_host(sshd_server, tmp_path, capsys):
    info = sshd_server.info
    keep = sshd_server.workdir / "not-lorarun.txt"
    keep.write_text("the user's file")
    job = tiny_job(
        tmp_path,
        "ssh",
        epochs=1,
        extra_resources=(
            f"  ssh_host: {info.host}\n  ssh_port: {info.port}\n  ssh_user: {info.username}\n"
            f"  ssh_key: {info.client_key}\n"
        ),
    )
    code = main(["submit", str(job), "--yes"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (tmp_path / "out" / "e2e_lora.safetensors").is_file()
    (state,) = JobStore().all()
    assert state.phase == "done" and state.instance_destroyed, state.message
    # destroy() removed the job's folder on the host and nothing else
    assert not (sshd_server.workdir / state.job_id).exists()
    assert sorted(p.name for p in sshd_server.workdir.iterdir()) == ["not-lorarun.txt"]
    assert keep.read_text() == "the user's file"
