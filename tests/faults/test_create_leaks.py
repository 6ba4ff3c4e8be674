"""#11.2: a create that does not return cleanly may still have made an instance. Before the fix, Ctrl-C during a
slow create ended `submit` (exit 130) with the instance the provider went on to create left billing, and a 502
from a create that happened left the instance up until `gc`. Now the job's label is looked for with
`list_owned()` for a bounded time and what is found is destroyed (and confirmed) before exiting."""

from __future__ import annotations

import os
import signal

import pytest
from support.cloud import tiny_job

from lorarun.runner.state import JobStore

from .test_faults import only_state, submit

pytestmark = pytest.mark.slow

# RunPod's cheapest offers are Community ones, rented through GraphQL podFindAndDeployOnDemand (it alone can ask
# for a public IP: provider_adapters/runpod/adapter.py); the fault is put on that one operation of /graphql.
CREATE_PATH = {"vastai": ("PUT", "/api/v0/asks/", b""), "runpod": ("POST", "/graphql", b"podFindAndDeployOnDemand")}


def _creates(cloud, method: str, path: str, marker: bytes) -> list:
    return [r for r in cloud.fake.requests_to(method, path) if marker in r.raw]


def test_ctrl_c_during_a_slow_create_leaves_nothing_billing(cloud, tmp_path, capsys, fault):
    job = tiny_job(tmp_path, cloud.name, epochs=1)
    method, path, marker = CREATE_PATH[cloud.name]
    # The SIGINT is sent as the create reaches the provider, which then takes 3 s more to answer (and creates the
    # instance all the same): the Ctrl-C lands while the call is in flight however long the steps before it took.
    cloud.fake.delay_next(
        method, path, seconds=3.0, body_contains=marker, on_arrival=lambda: os.kill(os.getpid(), signal.SIGINT)
    )
    fault.inject("create slow to answer", "sweep finds the late instance and destroys it")
    fault.inject("SIGINT while create is in flight")
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 130, err
    assert len(_creates(cloud, method, path, marker)) == 1, "the create request never reached the provider"
    assert cloud.instance_ids() == [], f"the interrupted create left an instance: {err}"
    state = only_state()
    assert state.leaked_instance_ids, "the swept instance was not recorded in the job's state"
    assert "destroyed (confirmed)" in err
    fault.observe(f"exit 130; instance {state.leaked_instance_ids[0]} found by label and destroyed (confirmed)")


def test_create_answering_502_although_it_created(cloud, tmp_path, capsys, fault):
    job = tiny_job(tmp_path, cloud.name, epochs=1)
    method, path, marker = CREATE_PATH[cloud.name]
    cloud.fake.fail_next(method, path, status=502, after_route=True, body_contains=marker)
    fault.inject("create returns 502 but the instance exists", "found by label, destroyed, exit 1")
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 1, err
    assert cloud.instance_ids() == [], f"the 502'd create left an instance: {err}"
    state = only_state()
    assert state.leaked_instance_ids and "destroyed (confirmed)" in err
    fault.observe(f"exit {code}; instance {state.leaked_instance_ids[0]} destroyed (confirmed) before exiting")


def test_create_refused_with_a_4xx_does_not_wait(vast_cloud, tmp_path, capsys, fault):
    """A definite refusal made nothing: no sweep, no wait."""
    job = tiny_job(tmp_path, vast_cloud.name, epochs=1)
    vast_cloud.fake.fail_next("PUT", "/api/v0/asks/", status=400)
    fault.inject("create refused 400", "exit 1 at once, nothing to sweep")
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 1 and "checking for up to" not in err
    assert vast_cloud.instance_ids() == [] and JobStore().all()
    fault.observe("exit 1, no sweep")
