"""`lorarun submit` end to end where the instance is a container of our built image, started by the fake provider
with that provider's start-up semantics (RunPod: our ENTRYPOINT with PUBLIC_KEY; Vast: Vast's start-up, ours from
onstart). No LORARUN_PYTHON, no SetEnv: the session finds everything the way a real instance's would."""

from __future__ import annotations

import json

import pytest
from support.cloud import tiny_job

from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

from .conftest import container_cloud


@pytest.mark.parametrize("provider", ["vastai", "runpod"])
def test_submit_runs_in_a_container_of_our_image(provider, built_image, tmp_path, monkeypatch, capsys):
    with container_cloud(provider, monkeypatch) as (fake, host):
        job = tiny_job(tmp_path, provider, epochs=1, extra_resources=f"  image: {built_image}")
        code = main(["submit", str(job), "--yes"])
        captured = capsys.readouterr()
        assert code == 0, captured.err + captured.out

        out = tmp_path / "out"
        assert (out / "e2e_lora.safetensors").is_file()
        (state,) = JobStore().all()
        assert state.phase == "done" and state.instance_destroyed, state.message
        # The instance was a container of the image the job named, and it is gone with the instance.
        # (RunPod: REST `image` or GraphQL `imageName`, whichever create path the adapter took.)
        assert any(built_image.encode() in r.raw for r in fake.requests if r.method in ("PUT", "POST"))
        assert host.started_images == [built_image]
        assert not host.alive(state.instance_id) and state.instance_id not in host.containers
        report = json.loads((out / "report.json").read_text())
        assert report


def test_stock_path_installs_lorarun_on_the_providers_image(base_image, tmp_path, monkeypatch, capsys):
    """`image: stock`: the provider's plain PyTorch image (here the conda-style test base, no lorarun, Python only
    on the container's ENV PATH) under Vast's start-up; lorarun goes up as a wheel and is pip-installed there."""
    monkeypatch.setenv("LORARUN_STOCK_IMAGE", base_image)
    with container_cloud("vastai", monkeypatch) as (fake, host):
        job = tiny_job(tmp_path, "vastai", epochs=1, extra_resources="  image: stock")
        code = main(["submit", str(job), "--yes"])
        captured = capsys.readouterr()
        assert code == 0, captured.err + captured.out
        assert "installing lorarun on the stock image" in captured.err

        assert (tmp_path / "out" / "e2e_lora.safetensors").is_file()
        (state,) = JobStore().all()
        assert state.phase == "done" and state.instance_destroyed, state.message
        created = [r.json() for r in fake.requests if r.method == "PUT" and b'"image"' in r.raw]
        assert created[0]["image"] == base_image  # the stock image itself, nothing of ours baked in
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        timings = json.dumps(report)
        assert '"install"' in timings, timings[:2000]
