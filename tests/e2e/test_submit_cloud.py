"""`lorarun submit` against the fake Vast.ai and RunPod APIs, with real sshd "instances" and the real engine."""

from __future__ import annotations

import json

import pytest
from support.cloud import tiny_job

from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def test_submit_end_to_end(cloud, tmp_path, capsys):
    job = tiny_job(tmp_path, cloud.name)
    code = main(["submit", str(job), "--yes"])
    captured = capsys.readouterr()
    assert code == 0, captured.err

    out = tmp_path / "out"
    assert (out / "e2e_lora.safetensors").is_file()
    assert (out / "e2e_lora-000001.safetensors").is_file()
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.html").is_file() and report

    (state,) = JobStore().all()
    assert state.phase == "done" and state.instance_destroyed, state.message
    assert state.ssh_host == "127.0.0.1"
    # The fake no longer knows the instance, its sshd is stopped, and destroy went over the API.
    assert cloud.instance_ids() == []
    assert not cloud.host.alive(state.instance_id)
    deletes = [r for r in cloud.fake.requests if r.method == "DELETE"]
    assert deletes and all(state.instance_id in r.path for r in deletes)
    # The per-job key reached the instance, the user's API key never did.
    created = [r for r in cloud.fake.requests if r.method in ("PUT", "POST") and (b"ssh-ed25519" in r.raw)]
    assert created
    api_key = {"vastai": "VAST_API_KEY", "runpod": "RUNPOD_API_KEY"}[cloud.name]
    import os

    secret = os.environ[api_key].encode()
    assert all(secret not in r.raw for r in cloud.fake.requests)
    workdir = cloud.host.root
    for path in workdir.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert secret not in path.read_bytes(), path
