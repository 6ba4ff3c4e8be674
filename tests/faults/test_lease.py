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
import threading
import time

import pytest
from support.cloud import tiny_job

from lorarun.runner.run import connect
from lorarun.runner.state import JobStore

from .test_faults import FAST_DESTROY, _kill_at, assert_torn_down, only_state, submit

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

WATCHDOG = (sys.executable, "-m", "lorarun.image.instance.agent", "watchdog", "--tick", "0.5")


# Where the controller dies: after the upload, as the agent is about to be started (the state says "run", nothing on
# the instance holds a lease yet), and while it waits for the instance to boot; both phases, both providers, in two
# runs. The controller holds at that phase boundary (image/hold_points.py) and is killed there.
KILLED_AT = {"vastai": "run", "runpod": "wait"}


def test_controller_killed_before_the_agent_starts(cloud, tmp_path, fault, holds):
    phase = KILLED_AT[cloud.name]
    cloud.host.boot_command = WATCHDOG
    job = tiny_job(tmp_path, cloud.name, epochs=1)
    fault.inject(
        f"controller SIGKILLed as phase {phase} starts, before the agent",
        "the instance's watchdog destroys it at LORARUN_DEADLINE",
    )
    _kill_at(holds, f"phase:{phase}", job, "--hard-lease-minutes", "0.4")  # 24 s from create
    state = only_state()
    assert state.phase == phase and state.instance_id and not state.instance_destroyed
    # A real instance boots by itself; the fakes move on when polled, and nobody polls now: boot it.
    cloud.fake.run_now(state.instance_id)
    assert cloud.host.wait_destroyed(state.instance_id, 120), "nothing on the instance destroyed it"
    assert cloud.instance_ids() == []
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


LEASE_S = 20  # renewed every LEASE_S / 4 while attached: 15 s of slack for a loaded machine's slow round


def test_a_healthy_run_longer_than_the_working_lease_finishes(vast_cloud, tmp_path, monkeypatch, capsys, fault, holds):
    monkeypatch.setattr(connect, "PROVIDER_OPTIONS", {"destroy_policy": FAST_DESTROY})
    vast_cloud.host.boot_command = WATCHDOG
    # The engine holds after its first step, busy (image/hold_points.py: the controller still sees a job using CPU)
    # until the first working lease has passed: the run outlasts its first lease on any machine, however fast.
    vast_cloud.host.extra_env.update(holds.env("engine:step"))
    job = tiny_job(tmp_path, vast_cloud.name, epochs=2)
    fault.inject(f"working lease ({LEASE_S} s) far shorter than the run", "renewed while attached; the job finishes")
    first_lease: list[float] = []
    releaser = threading.Thread(target=_release_after_the_first_lease, args=(holds, first_lease), daemon=True)
    releaser.start()
    code = submit(job, "--lease-seconds", str(LEASE_S), "--grace-seconds", "30")
    releaser.join(30)
    err = capsys.readouterr().err
    assert code == 0, err
    assert first_lease, "the engine never reached its hold point"
    state = only_state()
    assert state.phase == "done", state.message
    assert_torn_down(vast_cloud, state)
    assert (tmp_path / "out" / "e2e_lora.safetensors").is_file()
    events = [json.loads(line) for line in (JobStore().job_dir(state.job_id) / "events.jsonl").read_text().splitlines()]
    assert "lease_expired" not in [e["event"] for e in events]
    last_step = [e["t"] for e in events if e["event"] == "step"][-1]
    assert last_step > first_lease[0], "the engine stopped training before its first lease passed: proves nothing"
    fault.observe("finished, all checkpoints home, no lease_expired")


def _release_after_the_first_lease(holds, first_lease: list[float]) -> None:
    """Once the engine is held, wait out the lease the controller first gave the agent (agent.json), then let the
    engine go on. Waiting for a wall-clock deadline is not a race: the held engine cannot move meanwhile."""
    try:
        holds.wait_reached("engine:step")
        (state,) = JobStore().all()
        deadline = json.loads((JobStore().job_dir(state.job_id) / "agent.json").read_text())["lease_deadline"]
        first_lease.append(float(deadline))
        time.sleep(max(0.0, deadline - time.time()) + 2.0)
    finally:
        holds.release("engine:step")
