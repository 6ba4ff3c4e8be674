"""The provider clients' HTTP on `requests` sessions: one kept-alive connection per client, timeouts that raise
TransientError, the retry policy and the key redaction unchanged (provider_adapters/http.py, retry.CallPolicy)."""

from __future__ import annotations

import logging

import pytest
from fakes.runpod_server import API_KEY as RP_KEY
from fakes.runpod_server import FakeRunPod
from fakes.vast_server import API_KEY as VAST_KEY

from lorarun.provider_adapters import http, retry
from lorarun.provider_adapters.base import InstanceSpec, ResourceRequest
from lorarun.provider_adapters.errors import TransientError
from lorarun.provider_adapters.runpod.adapter import RunPodProvider
from lorarun.provider_adapters.vastai.adapter import VastProvider

SPEC = InstanceSpec(label="lorarun-http1", image="lorarun/trainer:1", disk_gb=20, ssh_public_key="ssh-ed25519 AAAA x")


def test_vast_client_reuses_one_connection(vast, sleeper):
    p = VastProvider(VAST_KEY, base_url=vast.url, sleep=sleeper, clock=sleeper.clock)
    inst = p.create(p.offers(ResourceRequest(gpu_names=("RTX 4090",)))[0], SPEC)
    for _ in range(4):
        p.get(inst.id)
    p.destroy(inst.id)
    ports = {r.client_port for r in vast.requests}
    assert len(vast.requests) >= 7 and len(ports) == 1  # keep-alive: every call on the same TCP connection


def test_runpod_client_reuses_its_connection(runpod, sleeper):
    p = RunPodProvider(
        RP_KEY, rest_url=runpod.url, graphql_url=f"{runpod.url}/graphql", sleep=sleeper, clock=sleeper.clock
    )
    p.offers(ResourceRequest())
    inst = p.create(p.offers(ResourceRequest(secure_cloud_only=True))[0], SPEC)
    p.get(inst.id)
    p.list_owned()
    assert len({r.client_port for r in runpod.requests}) == 1


def test_a_slow_answer_times_out_as_transient_and_is_retried_by_the_one_policy(vast, sleeper, caplog):
    caplog.set_level(logging.DEBUG)
    vast.delay_next("GET", "/api/v0/instances/", seconds=1.5, times=1)
    policy = retry.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01, max_total=5)
    p = VastProvider(
        VAST_KEY,
        base_url=vast.url,
        call=retry.CallPolicy(timeout=0.3, policy=policy),
        sleep=sleeper,
        clock=sleeper.clock,
    )
    assert p.get("123") is None  # first try timed out (TransientError), the retry got Vast's {"instances": null}
    assert len(sleeper.waits) == 1 and "timed out" in caplog.text and VAST_KEY not in caplog.text
    vast.delay_next("GET", "/api/v0/instances/", seconds=1.5, times=2)
    with pytest.raises(TransientError) as e:
        p.get("123")
    assert "timed out" in str(e.value) and VAST_KEY not in str(e.value)


def test_call_policy_fields_as_keywords_and_unknown_ones_refused():
    base = retry.CallPolicy(timeout=5.0)
    assert retry.CallPolicy.of(base, timeout=9.0).timeout == 9.0 and base.timeout == 5.0
    p = VastProvider("k", base_url="http://127.0.0.1:9", destroy_policy=retry.RetryPolicy(max_attempts=1))
    assert p.client.call.destroy_policy.max_attempts == 1 and p.client.call.policy is retry.DEFAULT_POLICY
    with pytest.raises(TypeError):
        VastProvider("k", retries=3)


def test_loopback_ignores_an_environment_proxy(vast, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would refuse every connection
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    resp = http.HttpSession().request("POST", f"{vast.url}/api/v0/bundles/", json_body={})
    assert resp.status == 200 and resp.json()["offers"]


def test_an_api_key_in_the_query_string_is_redacted_from_errors():
    session = http.HttpSession(timeout=2, secrets=["s3cr3t-key-123"])
    with pytest.raises(TransientError) as e:
        session.request("GET", "http://127.0.0.1:9/x", query={"api_key": "other-key-456"})
    assert "s3cr3t" not in str(e.value) and "other-key-456" not in str(e.value) and "api_key=***" in str(e.value)


def test_fake_runpod_sees_the_same_reused_connection_for_graphql_and_rest():
    with FakeRunPod() as fake:
        p = RunPodProvider(RP_KEY, rest_url=fake.url, graphql_url=f"{fake.url}/graphql")
        p.offers(ResourceRequest())
        p.list_owned()
        assert {r.path for r in fake.requests} >= {"/graphql", "/v2/pods"}
        assert len({r.client_port for r in fake.requests}) == 1
