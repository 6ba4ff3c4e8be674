"""#15.4 and #15.5: what the instance says cannot write outside the output folder, and a teardown the provider
does not confirm never exits 0, with the instance's own guard (grace window, self-destroy) still armed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cloud import tiny_job

from lorarun.runner.cli.app import main
from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run import connect
from lorarun.runner.run.monitor import JobMonitor

from .test_faults import FAST_DESTROY, only_state

HOSTILE = [
    "x/../../escaped.txt",
    "../escaped2.txt",
    "/tmp/escaped3.txt",
    "a//../../escaped4.txt",
    "link/escaped5.txt",
    ".",
    "nul\0byte.txt",
]


def test_hostile_manifest_writes_nothing_outside_the_output_folder(sshd_server, ssh_transport, tmp_path, fault):
    root = sshd_server.workdir / "job1"
    (root / "output" / "x").mkdir(parents=True)
    (root / "output" / "good.safetensors").write_bytes(b"fine")
    for name in ("escaped.txt", "escaped2.txt", "escaped4.txt"):
        (root / name).write_bytes(b"from the instance")
    entries = [{"path": "good.safetensors", "sha256": "a"}] + [{"path": p, "sha256": "b"} for p in HOSTILE]
    (root / "output" / "manifest.json").write_text(json.dumps({"files": entries}))
    local_out = tmp_path / "home" / "out"
    local_out.mkdir(parents=True)
    outside = tmp_path / "home" / "escaped.txt"
    outside.write_bytes(b"the user's file")  # would be overwritten by os.replace before the fix
    (local_out / "link").symlink_to(tmp_path / "home")  # a symlink already on the laptop is not a way out either
    for _ in HOSTILE:
        fault.inject("hostile manifest path", "only good.safetensors written, under out/")
    monitor = JobMonitor(
        ssh_transport, RemoteLayout(root=str(root), python="python3"), local_out, tmp_path / "events.jsonl"
    )
    pulled = monitor.pull_outputs()
    assert pulled == ["good.safetensors"]
    assert sorted(monitor.progress.refused) == sorted(HOSTILE)
    assert outside.read_bytes() == b"the user's file"
    written = sorted(
        str(p.relative_to(tmp_path)) for p in (tmp_path / "home").rglob("*") if p.is_file() and "escaped" in p.name
    )
    assert written == ["home/escaped.txt"]
    assert not Path("/tmp/escaped3.txt").exists() or Path("/tmp/escaped3.txt").read_bytes() != b"from the instance"
    fault.observe(f"{len(monitor.progress.refused)} refused, 1 pulled, nothing outside out/")


@pytest.mark.slow
def test_unconfirmed_teardown_exits_nonzero_and_the_agent_stays_armed(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    pytest.importorskip("torch")
    monkeypatch.setattr(connect, "PROVIDER_OPTIONS", {"destroy_policy": FAST_DESTROY})
    job = tiny_job(tmp_path, vast_cloud.name, epochs=1)
    vast_cloud.fake.fail_next("DELETE", "/api/v0/instances/", status=500, times=10_000)
    fault.inject("destroy answers 500 every time", "exit 3 with the instance id; agent armed; it self-destroys")
    code = main(["submit", str(job), "--yes", "--grace-seconds", "4"])
    err = capsys.readouterr().err
    state = only_state()
    assert code == 3, err
    assert state.instance_id in err and "MAY STILL BE RUNNING" in err
    assert (tmp_path / "out" / "e2e_lora.safetensors").is_file()
    job_dir = vast_cloud.host.workdir(state.instance_id)
    assert not list(job_dir.rglob("collected")), "the agent was told 'collected' before the destroy was confirmed"
    # The provider's API comes back; the agent, still in its grace window, destroys its own instance.
    vast_cloud.fake.clear_faults()
    assert vast_cloud.host.wait_destroyed(state.instance_id, 90), "the agent did not destroy its instance"
    assert vast_cloud.instance_ids() == []
    fault.observe(f"exit {code}, instance id said, agent self-destroyed after grace")
