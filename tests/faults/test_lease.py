"""The lease end to end (#11.3, #11.4), with the fake providers and real sshd instances.

- The controller dies between create() and the agent's start: before, nothing on the instance would ever destroy
  it. Now the instance gets LORARUN_DEADLINE at create time and its start-up runs `lorarun-agent watchdog`
  (modelled here by the fake host's boot command, as image/instance/startup/lorarun-startup.sh does it), which destroys it.
- A working lease much shorter than the healthy run: before, the agent stopped the job at the lease ("training
  failed: lease passed"); now the attached controller renews it while the job makes progress, and it finishes.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from support.cloud import tiny_job

from lorarun.runner.run import connect
from lorarun.runner.state import JobStore

from .test_faults import FAST_DESTROY, _controller, _kill_when, assert_torn_down, only_state, submit

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

WATCHDOG = (sys.executable, "-m", "lorarun.image.instance.agent", "watchdog", "--tick", "0.5")


def test_controller_killed_before_the_agent_starts(cloud, tmp_path, fault):
    when = "upload" if cloud.name == "vastai" else "wait"  # both phases, both providers, in two runs
    cloud.host.boot_command = WATCHDOG
    job = tiny_job(tmp_path, cloud.name, epochs=1)
    proc = _controller(job, "--hard-lease-minutes", "0.4")  # 24 s from create
    fault.inject(
        f"controller SIGKILLed in phase {when}, before the agent",
        "the instance's watchdog destroys it at LORARUN_DEADLINE",
    )
    # A tiny upload can come and go between two looks at the state file: "run" (the agent being started) is the
    # next phase, still with no agent holding a lease of its own, so it counts as "in upload" too.
    phases = ("upload", "run") if when == "upload" else (when,)
    _kill_when(proc, lambda s: s.instance_id and s.phase in phases, timeout=120)
    state = only_state()
    assert state.phase in phases and not state.instance_destroyed
    # A real instance boots by itself; the fakes move on when polled, and nobody polls now: boot it.
    cloud.fake.run_now(state.instance_id)
    deadline = time.monotonic() + 120
    while (cloud.instance_ids() or cloud.host.alive(state.instance_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cloud.instance_ids() == [], "nothing on the instance destroyed it"
    account_key = os.environ["VAST_API_KEY" if cloud.name == "vastai" else "RUNPOD_API_KEY"]
    destroys = [
        r
        for r in cloud.fake.requests
        if (r.method == "DELETE" and state.instance_id in r.path)
        or (r.method == "POST" and r.path.endswith("/graphql") and _graphql_mutation(r.raw) == "podTerminate")
    ]
    assert destroys and all(account_key not in r.headers.get("authorization", "") for r in destroys)
    # The self-destroy plan travels in the create call's env (so it names podTerminate there): never a key.
    assert all(account_key.encode() not in r.raw for r in cloud.fake.requests)
    fault.observe(f"instance {state.instance_id} destroyed itself by its deadline, with its own key")


def _graphql_mutation(raw: bytes) -> str:
    """The first field of a GraphQL mutation ("podTerminate"), or "" for a query or another body."""
    try:
        query = str(json.loads(raw or b"{}").get("query") or "")
    except ValueError:
        return ""
    head = query.strip()
    if not head.startswith("mutation"):
        return ""
    body = head[head.index("{") + 1 :].lstrip() if "{" in head else ""
    return body.split("(", 1)[0].split("{", 1)[0].strip()


def test_a_healthy_run_longer_than_the_working_lease_finishes(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    monkeypatch.setattr(connect, "PROVIDER_OPTIONS", {"destroy_policy": FAST_DESTROY})
    vast_cloud.host.boot_command = WATCHDOG
    job = tiny_job(tmp_path, vast_cloud.name, epochs=40)
    job.write_text(job.read_text().replace("save_every_n_epochs: 1\n", "save_every_n_epochs: 20\n"))
    fault.inject("working lease (10 s) far shorter than the run", "renewed while attached; the job finishes")
    code = submit(job, "--lease-seconds", "10", "--grace-seconds", "30")
    err = capsys.readouterr().err
    assert code == 0, err
    state = only_state()
    assert state.phase == "done", state.message
    assert_torn_down(vast_cloud, state)
    assert (tmp_path / "out" / "e2e_lora.safetensors").is_file()
    events = [json.loads(line) for line in (JobStore().job_dir(state.job_id) / "events.jsonl").read_text().splitlines()]
    assert "lease_expired" not in [e["event"] for e in events]
    started = next(e["t"] for e in events if e["event"] == "agent_started")
    last_step = [e["t"] for e in events if e["event"] == "step"][-1]
    assert last_step - started > 10, "the run was shorter than the lease: the test proves nothing"
    fault.observe("finished, all checkpoints home, no lease_expired")
