"""The RunPod adapter against the fake RunPod API over real HTTP (providers.md §2)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from fakes.runpod_server import API_KEY, FakeRunPod

from lorarun.provider_adapters import http, retry
from lorarun.provider_adapters.base import InstanceSpec, InstanceStatus, Offer, Provider, ResourceRequest, job_label
from lorarun.provider_adapters.errors import (
    AuthError,
    InsufficientFundsError,
    NoCapacityError,
    PoolDeniedError,
    ProviderError,
    RateLimitError,
    TransientError,
)
from lorarun.provider_adapters.runpod.adapter import RunPodProvider, parse_offer_id

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRunpodJobKey lorarun-job"
RTX4090 = "NVIDIA GeForce RTX 4090"


def make(fake: FakeRunPod, sleeper, key: str | None = API_KEY) -> RunPodProvider:
    return RunPodProvider(key, rest_url=fake.url, graphql_url=f"{fake.url}/graphql", sleep=sleeper, clock=sleeper.clock)


def spec(**kw) -> InstanceSpec:
    base = dict(
        label=job_label("9c1d"),
        image="lorarun/trainer:1",
        disk_gb=40,
        ssh_public_key=PUBKEY,
        env=(("LORARUN_JOB", "9c1d"),),
    )
    base.update(kw)
    return InstanceSpec(**base)


def offer(cloud: str = "SECURE", gpu: str = RTX4090, count: int = 1) -> Offer:
    return Offer("runpod", f"{gpu}::{cloud}", "RTX 4090", count, 24, 0.69 * count, secure_cloud=cloud == "SECURE")


def test_is_a_provider(runpod, sleeper):
    assert isinstance(make(runpod, sleeper), Provider) and make(runpod, sleeper).name == "runpod"


def test_offers_query_prices_both_clouds_without_sending_the_key(runpod, sleeper):
    offers = make(runpod, sleeper).offers(ResourceRequest(gpu_names=("RTX 4090",), gpu_count=2))
    calls = runpod.requests_to("POST", "/graphql")
    assert len(calls) == 2 and all("authorization" not in c.headers and "api_key" not in c.query for c in calls)
    assert [c.json()["variables"]["lowestPriceInput"] for c in calls] == [
        {"gpuCount": 2, "secureCloud": True},
        {"gpuCount": 2, "secureCloud": False},
    ]
    assert "lowestPrice" in calls[0].json()["query"]
    assert [(o.id, o.price_per_hour, o.secure_cloud) for o in offers] == [
        (f"{RTX4090}::COMMUNITY", 0.68, False),
        (f"{RTX4090}::SECURE", 1.38, True),
    ]
    o = offers[0]
    assert o.gpu_count == 2 and o.vram_gb == 24 and o.gpu_name == "RTX 4090" and o.location == "US"
    assert o.storage_price_gb_month == 0.10 and parse_offer_id(o.id) == (RTX4090, "COMMUNITY")


def test_offers_filters_vram_price_secure_and_stock(runpod, sleeper):
    p = make(runpod, sleeper)
    got = p.offers(ResourceRequest(min_vram_gb=48, max_price_per_hour=2.0, secure_cloud_only=True))
    assert [o.gpu_name for o in got] == ["RTX A6000", "A100 PCIe"]
    runpod.set_capacity("NVIDIA RTX A6000", "SECURE", 0)
    got = p.offers(ResourceRequest(min_vram_gb=48, max_price_per_hour=2.0, secure_cloud_only=True))
    assert [o.gpu_name for o in got] == ["A100 PCIe"]
    assert p.offers(ResourceRequest(gpu_names=("A6000",), gpu_count=6)) == []  # maxGpuCount 4
    assert [o.location for o in p.offers(ResourceRequest(regions=("CA",)))] == ["CA", "CA"]


def test_create_sends_v2_body_with_count_ports_and_per_job_key(runpod, sleeper):
    p = make(runpod, sleeper)
    inst = p.create(offer("SECURE"), spec(onstart="sleep infinity"))
    body = runpod.requests_to("POST", "/v2/pods")[0].json()
    assert body == {
        "name": "lorarun-9c1d",
        "image": "lorarun/trainer:1",
        "gpu": {"id": RTX4090, "count": 1, "minCudaVersion": "12.8"},  # the image's CUDA (image/base_cuda.py)
        "cloud": "SECURE",
        "disk": 40,
        "ports": ["22/tcp"],
        "env": {"LORARUN_JOB": "9c1d", "PUBLIC_KEY": PUBKEY},
        "args": "sleep infinity",
    }
    assert "mounts" not in body  # no volume: nothing bills after terminate
    assert inst.id in runpod.live_ids() and inst.status is InstanceStatus.PENDING and inst.label == "lorarun-9c1d"
    assert inst.price_per_hour == 0.69 and inst.gpu_count == 1


def test_community_pods_ask_graphql_for_a_public_ip_and_get_direct_ssh(runpod, sleeper):
    """v2 cannot ask for a public IP; GraphQL's `supportPublicIp: true` can (dstack does so). The fake's
    Community pods have none unless asked, as RunPod documents."""
    p = make(runpod, sleeper)
    inst = p.create(offer("COMMUNITY"), spec(onstart="sleep infinity"))
    assert runpod.requests_to("POST", "/v2/pods") == []
    [call] = [r.json() for r in runpod.requests_to("POST", "/graphql")]
    assert "podFindAndDeployOnDemand" in call["query"]
    pod_input = call["variables"]["input"]
    assert pod_input == {
        "cloudType": "COMMUNITY",
        "gpuTypeId": RTX4090,
        "gpuCount": 1,
        "name": "lorarun-9c1d",
        "imageName": "lorarun/trainer:1",
        "containerDiskInGb": 40,
        "volumeInGb": 0,
        "ports": "22/tcp",
        "supportPublicIp": True,
        "minCudaVersion": "12.8",
        "dockerArgs": "sleep infinity",
        "env": [{"key": "LORARUN_JOB", "value": "9c1d"}, {"key": "PUBLIC_KEY", "value": PUBKEY}],
    }
    assert inst.status is InstanceStatus.PENDING and inst.price_per_hour == 0.34
    runpod.run_now(inst.id)
    got = p.get(inst.id)
    assert got.status is InstanceStatus.RUNNING and got.ssh is not None and not got.start_failure
    assert ("cloud", "COMMUNITY") in got.extra


def test_community_capacity_error_from_graphql_is_no_capacity(runpod, sleeper):
    runpod.set_capacity(RTX4090, "COMMUNITY", 0)
    with pytest.raises(NoCapacityError) as e:
        make(runpod, sleeper).create(offer("COMMUNITY"), spec())
    assert "no longer any instances available" in str(e.value) and sleeper.waits == []


@pytest.mark.parametrize("cloud", ["SECURE", "COMMUNITY"])
def test_private_image_pulls_with_a_per_pod_registry_credential_deleted_with_the_pod(runpod, sleeper, cloud):
    """RunPod pulls a private image with a stored credential (v2 `POST /v2/registries`), named in the create as
    `registry` (v2) or `containerRegistryAuthId` (GraphQL); lorarun makes one per pod and deletes it on destroy."""
    from lorarun.provider_adapters.base import RegistryLogin

    p = make(runpod, sleeper)
    login = RegistryLogin("ghcr.io", "me", "ghp_secret_token")
    inst = p.create(offer(cloud), spec(image="ghcr.io/me/engine:1", registry_login=login))
    [made] = runpod.requests_to("POST", "/v2/registries")
    assert made.json() == {"name": "lorarun-9c1d-ghcr.io", "username": "me", "password": "ghp_secret_token"}
    [credential] = runpod.registries
    if cloud == "SECURE":
        assert runpod.requests_to("POST", "/v2/pods")[0].json()["registry"] == credential
    else:
        [call] = [r.json() for r in runpod.requests_to("POST", "/graphql")]
        assert call["variables"]["input"]["containerRegistryAuthId"] == credential
    assert runpod.pods[inst.id].registry == credential
    assert all("ghp_secret_token" not in v for v in runpod.pods[inst.id].env.values())  # never on the pod
    p.destroy(inst.id)
    assert runpod.registries == {} and inst.id not in runpod.live_ids()


def test_a_failed_create_deletes_the_credential_it_made(runpod, sleeper):
    from lorarun.provider_adapters.base import RegistryLogin

    runpod.set_capacity(RTX4090, "SECURE", 0)
    with pytest.raises(NoCapacityError):
        make(runpod, sleeper).create(offer("SECURE"), spec(registry_login=RegistryLogin("ghcr.io", "me", "tok")))
    assert len(runpod.requests_to("POST", "/v2/registries")) == 1 and runpod.registries == {}


def test_create_refuses_env_with_the_api_key(runpod, sleeper):
    with pytest.raises(ValueError):
        make(runpod, sleeper).create(offer(), spec(env=(("K", f"x{API_KEY}"),)))
    assert runpod.requests_to("POST", "/v2/pods") == []


def test_poll_until_running_then_direct_ssh(runpod, sleeper):
    p = make(runpod, sleeper)
    inst = p.create(offer(), spec())
    seen = []
    for _ in range(10):
        got = p.get(inst.id)
        seen.append(got.status)
        if got.status is InstanceStatus.RUNNING:
            break
    assert seen == [InstanceStatus.PENDING, InstanceStatus.PENDING, InstanceStatus.RUNNING]
    pod = runpod.pods[inst.id]
    assert (got.ssh.host, got.ssh.port, got.ssh.username) == (pod.host, pod.port, "root")
    assert got.started_at is not None and ("cloud", "SECURE") in got.extra


def test_running_without_a_public_ip_is_a_failed_start_not_a_wait(sleeper):
    with FakeRunPod(boot_polls=0) as fake:
        p = make(fake, sleeper)
        # A Community pod created through v2 (which cannot ask for a public IP), as RunPod would run it.
        pod = p.client.create_pod(
            {
                "name": "lorarun-x",
                "image": "i",
                "gpu": {"id": RTX4090, "count": 1},
                "cloud": "COMMUNITY",
                "ports": ["22/tcp"],
            }
        )
        got = p.get(pod["id"])
        # Only a private 100.65.x address and the interactive proxy: no SFTP-capable endpoint, ever.
        assert got.status is InstanceStatus.RUNNING and got.ssh is None
        assert got.start_failure.startswith("no public IP")


def test_runtime_ports_used_when_ssh_direct_is_null(runpod, sleeper):
    p = make(runpod, sleeper)
    inst = p.create(offer(), spec())
    runpod.fail_next(
        "GET",
        f"/v2/pods/{inst.id}",
        status=200,
        body={
            "id": inst.id,
            "name": "lorarun-9c1d",
            "status": "RUNNING",
            "ssh": {"direct": None},
            "runtime": {
                "ports": [
                    {"private": 8888, "public": 8888, "type": "http", "ip": "100.65.0.3"},
                    {"private": 22, "public": 43210, "type": "tcp", "ip": "45.23.12.1"},
                ]
            },
        },
    )
    got = p.get(inst.id)
    assert (got.ssh.host, got.ssh.port) == ("45.23.12.1", 43210)


def test_exited_and_error_status(runpod, sleeper):
    p = make(runpod, sleeper)
    inst = p.create(offer(), spec())
    runpod.set_status(inst.id, "EXITED")
    got = p.get(inst.id)
    assert got.status is InstanceStatus.STOPPED and got.price_per_hour == 0.0
    runpod.set_status(inst.id, "ERROR")
    assert p.get(inst.id).status is InstanceStatus.ERROR


def test_destroy_twice_then_get_none(runpod, sleeper):
    p = make(runpod, sleeper)
    inst = p.create(offer(), spec())
    p.destroy(inst.id)
    p.destroy(inst.id)  # 404 → success
    assert p.get(inst.id) is None and runpod.destroyed == [inst.id]
    assert len(runpod.requests_to("DELETE", f"/v2/pods/{inst.id}")) == 2


def test_vanished_pod_reads_as_none(runpod, sleeper):
    p = make(runpod, sleeper)
    inst = p.create(offer(), spec())
    runpod.vanish(inst.id)
    assert p.get(inst.id) is None


def test_list_owned_filters_by_name_prefix(runpod, sleeper):
    p = make(runpod, sleeper)
    mine = {p.create(offer(), spec(label=job_label(f"j{i}"))).id for i in range(3)}
    p.create(offer(), spec(label="my-notebook"))
    owned = p.list_owned()
    assert {i.id for i in owned} == mine and all(i.label.startswith("lorarun-") for i in owned)


def test_self_destruct_with_pod_scoped_key(runpod, sleeper):
    p = make(runpod, sleeper)
    a, b = p.create(offer(), spec()), p.create(offer(), spec())
    sd = p.self_destruct()
    assert (sd.id_env, sd.key_env) == ("RUNPOD_POD_ID", "RUNPOD_API_KEY")
    rest = f"{runpod.url}/v2/pods/{{instance_id}}"
    assert [(w.kind, w.method or w.url or " ".join(w.argv)) for w in sd.ways] == [
        ("http", "DELETE"),
        ("graphql", f"{runpod.url}/graphql"),
        ("command", "runpodctl remove pod {instance_id}"),
        ("command", "runpodctl pod delete {instance_id}"),
    ]
    assert sd.ways[0].url == rest and "podTerminate" in sd.ways[1].query
    assert [c.style for c in sd.checks] == ["runpod_rest", "runpod_graphql"]
    key_a = runpod.pods[a.id].pod_key
    as_a = {"Authorization": f"Bearer {key_a}"}
    # v2 refuses the pod-scoped key (undocumented either way, §2.7; the fake models the refusal) …
    assert http.request("DELETE", rest.format(instance_id=a.id), headers=as_a).status == 403
    term = {"query": sd.ways[1].query.replace("{instance_id}", b.id)}
    # … GraphQL takes it, for its own pod only (the other pod is "not found" to it).
    other = http.request("POST", f"{runpod.url}/graphql", json_body=term, headers=as_a).json()
    assert other["errors"][0]["message"] == "pod not found to terminate"
    term = {"query": sd.ways[1].query.replace("{instance_id}", a.id)}
    assert http.request("POST", f"{runpod.url}/graphql", json_body=term, headers=as_a).json() == {
        "data": {"podTerminate": None}
    }
    assert runpod.live_ids() == [b.id]
    assert "runpodctl remove pod abc" in p.kill_hint("abc")


# -- errors ---------------------------------------------------------------------------------------------------
def test_bad_key(runpod, sleeper):
    p = make(runpod, sleeper, key="rpa_wrong")
    for call in (lambda: p.get("x"), lambda: p.create(offer(), spec()), lambda: p.destroy("x"), p.list_owned):
        with pytest.raises(AuthError) as e:
            call()
        assert e.value.status == 401
    assert sleeper.waits == []


def test_no_key_fails_before_any_request(runpod, sleeper):
    p = make(runpod, sleeper, key=None)
    assert p.offers(ResourceRequest())  # public prices still work
    with pytest.raises(AuthError):
        p.get("x")
    assert runpod.requests_to("GET", "/v2/pods") == []


def test_no_capacity_is_400_no_capacity_error(runpod, sleeper):
    runpod.set_capacity(RTX4090, "SECURE", 0)
    with pytest.raises(NoCapacityError) as e:
        make(runpod, sleeper).create(offer(), spec())
    assert e.value.status == 400 and "no longer any instances" in str(e.value)


def test_insufficient_balance_is_402(runpod, sleeper):
    runpod.balance = 0.1
    with pytest.raises(InsufficientFundsError):
        make(runpod, sleeper).create(offer(), spec())


def test_contract_violation_422_is_provider_error_with_detail(runpod, sleeper):
    runpod.fail_next(
        "POST",
        "/v2/pods",
        status=422,
        content_type="application/problem+json",
        body={
            "title": "Unprocessable Entity",
            "status": 422,
            "detail": "Request validation failed.",
            "errors": ["$: additional properties 'bogus' not allowed"],
        },
    )
    with pytest.raises(ProviderError) as e:
        make(runpod, sleeper).create(offer(), spec())
    assert type(e.value) is ProviderError and "bogus" in str(e.value) and e.value.status == 422


def test_409_on_delete_is_provider_error(runpod, sleeper):
    runpod.fail_next("DELETE", "/v2/pods/", status=409)
    with pytest.raises(ProviderError) as e:
        make(runpod, sleeper).destroy("abc")
    assert e.value.status == 409 and type(e.value) is ProviderError


def test_429_honours_retry_after(runpod, sleeper):
    p = make(runpod, sleeper)
    runpod.fail_next("POST", "/v2/pods", status=429, times=2, headers={"Retry-After": "7"})
    inst = p.create(offer(), spec())
    assert inst.id in runpod.live_ids() and len(sleeper.waits) == 2 and min(sleeper.waits) >= 7


def test_429_storm_gives_rate_limit_error(runpod, sleeper):
    runpod.fail_next("GET", "/v2/pods", status=429, times=99)
    with pytest.raises(RateLimitError) as e:
        make(runpod, sleeper).list_owned()
    assert e.value.retry_after == 2
    assert len(runpod.requests_to("GET", "/v2/pods")) == retry.DEFAULT_POLICY.max_attempts


def test_destroy_outlasts_5xx_storm(runpod, sleeper):
    p = make(runpod, sleeper)
    inst = p.create(offer(), spec())
    runpod.fail_next("DELETE", "/v2/pods/", status=503, times=8)
    p.destroy(inst.id)
    assert inst.id not in runpod.live_ids()


def test_create_not_retried_after_5xx(runpod, sleeper):
    runpod.fail_next("POST", "/v2/pods", status=502)
    with pytest.raises(TransientError):
        make(runpod, sleeper).create(offer(), spec())
    assert len(runpod.requests_to("POST", "/v2/pods")) == 1


def test_graphql_errors_on_200_are_provider_errors(runpod, sleeper):
    runpod.fail_next(
        "POST",
        "/graphql",
        status=200,
        body={
            "errors": [{"message": "Something went wrong", "path": ["gpuTypes"], "extensions": {"code": "RUNPOD"}}],
            "data": {"gpuTypes": None},
        },
    )
    with pytest.raises(ProviderError) as e:
        make(runpod, sleeper).offers(ResourceRequest())
    assert "Something went wrong" in str(e.value) and type(e.value) is ProviderError
    runpod.fail_next(
        "POST", "/graphql", status=200, body={"errors": [{"message": "no", "extensions": {"code": "UNAUTHENTICATED"}}]}
    )
    with pytest.raises(AuthError):
        make(runpod, sleeper).offers(ResourceRequest())


def test_key_never_in_errors_or_logs(runpod, sleeper, caplog):
    caplog.set_level(logging.DEBUG)
    runpod.fail_next("GET", "/v2/pods/", status=500, times=99, body={"detail": f"boom {API_KEY}"})
    with pytest.raises(TransientError) as e:
        make(runpod, sleeper).get("abc")
    assert API_KEY not in str(e.value) and API_KEY not in caplog.text and "***" in str(e.value)


def test_403_on_one_gpu_type_skips_it_but_elsewhere_is_auth(runpod, sleeper):
    runpod.forbidden.add((RTX4090, "SECURE"))
    with pytest.raises(PoolDeniedError) as e:  # a NoCapacityError: the next offer is tried
        make(runpod, sleeper).create(offer(), spec())
    assert e.value.status == 403 and isinstance(e.value, NoCapacityError)
    runpod.fail_next("GET", "/v2/pods/x", status=403)
    with pytest.raises(AuthError) as e:
        make(runpod, sleeper).get("x")
    assert not isinstance(e.value, NoCapacityError)


def test_list_owned_follows_next_cursor(sleeper):
    with FakeRunPod(page_size=2) as fake:
        p = make(fake, sleeper)
        mine = {p.create(offer(), spec(label=job_label(f"j{i}"))).id for i in range(5)}
        assert {i.id for i in p.list_owned()} == mine
        assert [r.query.get("cursor") for r in fake.requests_to("GET", "/v2/pods")] == [None, "2", "4"]


def test_hooks_back_the_pod_with_a_real_endpoint(sleeper):
    created, destroyed = [], []

    def on_create(pod_id, env, public_key):
        created.append((pod_id, env, public_key))
        return "127.0.0.1", 2022

    with FakeRunPod(on_create=on_create, on_destroy=destroyed.append) as fake:
        p = make(fake, sleeper)
        inst = p.create(offer(), spec())
        got = None
        while got is None or got.status is not InstanceStatus.RUNNING:
            got = p.get(inst.id)
        assert (got.ssh.host, got.ssh.port) == ("127.0.0.1", 2022)
        [(pid, env, key)] = created
        assert pid == inst.id and key == PUBKEY and env["PUBLIC_KEY"] == PUBKEY
        assert env["RUNPOD_POD_ID"] == inst.id and env["RUNPOD_API_KEY"] == fake.pods[pid].pod_key
        p.destroy(inst.id)
        assert destroyed == [inst.id]


def test_urls_from_env(runpod, sleeper, monkeypatch):
    monkeypatch.setenv("LORARUN_RUNPOD_URL", f"{runpod.url}/v2")
    monkeypatch.setenv("LORARUN_RUNPOD_GRAPHQL_URL", f"{runpod.url}/graphql")
    # runpodctl's own variable holds a v1 URL (https://rest.runpod.io/v1): lorarun must not build v2 paths on it.
    monkeypatch.setenv("RUNPOD_API_URL", "https://rest.runpod.io/v1")
    p = RunPodProvider(API_KEY, sleep=sleeper, clock=sleeper.clock)
    assert p.client.rest_url == runpod.url and p.offers(ResourceRequest())
    assert p.list_owned() == []
    monkeypatch.delenv("LORARUN_RUNPOD_URL")
    assert RunPodProvider(API_KEY).client.rest_url == "https://api.runpod.io"


def test_a_403_pool_is_skipped_by_the_offer_fallback_not_the_whole_submit(runpod, sleeper):
    """createPod's 403 means "skip this candidate, keep going" (runpod/docs api-reference-v2 createPod)."""
    from lorarun.runner.price.estimate import Estimate, Phases
    from lorarun.runner.price.offer_choice import create_cheapest

    p = make(runpod, sleeper)
    offers = p.offers(ResourceRequest(gpu_names=("RTX 4090", "RTX 3090"), secure_cloud_only=True))
    assert [o.id for o in offers] == ["NVIDIA GeForce RTX 3090::SECURE", f"{RTX4090}::SECURE"]
    runpod.forbidden.add(("NVIDIA GeForce RTX 3090", "SECURE"))
    phases = Phases(boot=60, image_pull=0, model_download=0, upload=0, prepare=0, train=600, sampling=0, download=0)
    ranked = [
        Estimate(
            offer=o,
            phases=phases,
            seconds_per_step=0.3,
            step_source="t",
            step_kind="shipped",
            boot_source="t",
            compute_cost=o.price_per_hour,
            storage_cost=0.0,
            vram_needed_gb=6,
        )
        for o in offers
    ]
    chosen, inst = create_cheapest(p, ranked, lambda _e: spec(), on_instance_id=pytest.fail)
    assert chosen.offer.id == f"{RTX4090}::SECURE" and inst.id in runpod.live_ids()
    assert [r.json()["gpu"]["id"] for r in runpod.requests_to("POST", "/v2/pods")] == [
        "NVIDIA GeForce RTX 3090",
        RTX4090,
    ]


@pytest.mark.parametrize("cloud", ["SECURE", "COMMUNITY"])
def test_hosts_on_older_cuda_than_the_image_are_not_rented(runpod, sleeper, cloud):
    """The create asks for the image's CUDA at least (`minCudaVersion`); where RunPod has only hosts on older
    drivers it answers as for no capacity, and lorarun moves on to the next offer rather than renting a pod that
    could never start the image."""
    runpod.host_cuda = 12.4
    with pytest.raises(NoCapacityError):
        make(runpod, sleeper).create(offer(cloud), spec())
    assert runpod.live_ids() == []
    runpod.host_cuda = 12.8
    inst = make(runpod, sleeper).create(offer(cloud), spec())
    assert inst.id in runpod.live_ids()


@pytest.mark.parametrize("cloud", ["SECURE", "COMMUNITY"])
def test_a_region_filter_pins_the_create_to_the_offers_country(runpod, sleeper, cloud):
    """resources.regions: the pod goes where the offer was found (GraphQL `countryCode`; v2 cannot pin a country),
    not on any host of the type anywhere; where that country has no host, RunPod answers as for no capacity."""
    p = make(runpod, sleeper)
    offers = p.offers(ResourceRequest(gpu_names=("RTX 4090",), regions=("US",)))
    [found] = [o for o in offers if o.id.endswith(cloud)]
    assert found.location == "US"
    inst = p.create(found, spec(regions=("US",)))
    assert inst.id in runpod.live_ids() and runpod.requests_to("POST", "/v2/pods") == []
    [call] = [r.json() for r in runpod.requests_to("POST", "/graphql") if "Deploy" in r.json()["query"]]
    pod_input = call["variables"]["input"]
    assert pod_input["countryCode"] == "US" and pod_input["cloudType"] == cloud
    assert ("supportPublicIp" in pod_input) == (cloud == "COMMUNITY")  # a Secure pod always has a public IP
    with pytest.raises(NoCapacityError):
        p.create(dataclasses.replace(found, location="DE"), spec(regions=("DE",)))
    assert runpod.live_ids() == [inst.id]


def test_without_a_region_filter_nothing_is_pinned(runpod, sleeper):
    p = make(runpod, sleeper)
    p.create(offer("COMMUNITY"), spec())
    [call] = [r.json() for r in runpod.requests_to("POST", "/graphql")]
    assert "countryCode" not in call["variables"]["input"]
