"""`lorarun submit` when the rented machine never comes up, or its direct SSH port stays silent (issue #10 point 4,
point 1): the job ends on another offer, and the failed instance is destroyed and confirmed. Fake provider APIs,
real sshd "instances", the real engine on CPU."""

from __future__ import annotations

import pytest
from support.cloud import fake_cloud, tiny_job

from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def submit(cloud, tmp_path, capsys) -> tuple[int, str]:
    code = main(["submit", str(tiny_job(tmp_path, cloud.name, epochs=1)), "--yes"])
    return code, capsys.readouterr().err


def assert_done_elsewhere(cloud, tmp_path, err: str, *, creates: int) -> None:
    (state,) = JobStore().all()
    assert state.phase == "done" and state.instance_destroyed, err
    assert (tmp_path / "out" / "e2e_lora.safetensors").is_file()
    assert cloud.instance_ids() == []  # nothing left billing: the failed one and the one that worked
    assert len(state.leaked_instance_ids) == creates - 1  # the failed ones, recorded before they were destroyed
    assert state.instance_id not in state.leaked_instance_ids
    assert set(state.leaked_instance_ids) <= {str(i) for i in cloud.fake.destroyed}
    assert "failed to start" in err


def test_vast_failed_starts_fall_back_to_other_machines(tmp_path, monkeypatch, capsys):
    """First an OCI runtime failure (stays `created`), then an outbid instance; the third machine runs the job."""
    with fake_cloud("vastai", tmp_path, monkeypatch) as cloud:
        cloud.fake.fail_next_starts = ["oci", "outbid"]
        code, err = submit(cloud, tmp_path, capsys)
        assert code == 0, err
        asks = [r.path.split("/")[-2] for r in cloud.fake.requests_to("PUT", "/api/v0/asks/")]
        machines = {cloud.fake.offers[int(a)]["machine_id"] for a in asks}
        assert len(asks) == 3 and len(machines) == 3  # a failed machine is not tried again
        assert_done_elsewhere(cloud, tmp_path, err, creates=3)
        assert "OCI runtime create failed" in err and "outbid" in err
        for failed in JobStore().all()[0].leaked_instance_ids:
            # Detected at once: a handful of polls, not the boot timeout.
            assert len(cloud.fake.requests_to("GET", f"/api/v0/instances/{failed}/")) <= 4


def test_vast_silent_direct_port_is_reached_through_the_proxy(tmp_path, monkeypatch, capsys):
    with fake_cloud("vastai", tmp_path, monkeypatch) as cloud:
        cloud.fake.direct_ssh_silent = True
        code, err = submit(cloud, tmp_path, capsys)
        assert code == 0, err
        (state,) = JobStore().all()
        assert state.phase == "done" and state.instance_destroyed
        assert state.ssh_port == cloud.host.servers[state.instance_id].info.port  # the proxy: where sshd answers
        assert len(cloud.fake.requests_to("PUT", "/api/v0/asks/")) == 1  # same machine, no second rental


def test_runpod_community_pod_without_public_ip_is_destroyed_and_secure_cloud_used(tmp_path, monkeypatch, capsys):
    with fake_cloud("runpod", tmp_path, monkeypatch) as cloud:
        cloud.fake.support_public_ip_honoured = False  # the host ignores supportPublicIp
        code, err = submit(cloud, tmp_path, capsys)
        assert code == 0, err
        assert_done_elsewhere(cloud, tmp_path, err, creates=2)
        (state,) = JobStore().all()
        [failed] = state.leaked_instance_ids
        assert failed in cloud.fake.destroyed
        deploys = cloud.fake.requests_to("POST", "/graphql")
        assert any("podFindAndDeployOnDemand" in (r.json() or {}).get("query", "") for r in deploys)
        [secure] = [r.json() for r in cloud.fake.requests_to("POST", "/v2/pods")]
        assert secure["cloud"] == "SECURE"
        assert "no public IP" in err
