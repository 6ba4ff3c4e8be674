"""The Vast.ai adapter against the fake Vast API over real HTTP (providers.md §1)."""

from __future__ import annotations

import logging

import pytest
from fakes.vast_server import API_KEY, FakeVast

from lorarun.provider_adapters import retry
from lorarun.provider_adapters.base import InstanceSpec, InstanceStatus, Provider, ResourceRequest, job_label
from lorarun.provider_adapters.errors import (
    AuthError,
    CreateFailed,
    InsufficientFundsError,
    OfferGoneError,
    ProviderError,
    RateLimitError,
    TransientError,
)
from lorarun.provider_adapters.vastai.adapter import IMAGE_ONSTART, VastProvider

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJobkeyjobkeyjobkey lorarun-job"


def make(fake: FakeVast, sleeper, key: str | None = API_KEY) -> VastProvider:
    return VastProvider(key, base_url=fake.url, sleep=sleeper, clock=sleeper.clock)


def spec(**kw) -> InstanceSpec:
    base = dict(
        label=job_label("7f3a"),
        image="lorarun/trainer:1",
        disk_gb=40,
        ssh_public_key=PUBKEY,
        env=(("LORARUN_JOB", "7f3a"),),
        onstart="touch ~/.no_auto_tmux",
    )
    base.update(kw)
    return InstanceSpec(**base)


def rtx4090(**kw) -> ResourceRequest:
    return ResourceRequest(gpu_names=("RTX 4090",), min_vram_gb=20, **kw)


def test_is_a_provider(vast, sleeper):
    assert isinstance(make(vast, sleeper), Provider)
    assert make(vast, sleeper).name == "vastai"


def test_search_sends_documented_query_and_maps_units(vast, sleeper):
    offers = make(vast, sleeper).offers(rtx4090(max_price_per_hour=0.5, min_reliability=0.95, disk_gb=50))
    body = vast.requests_to("POST", "/api/v0/bundles/")[0].json()
    assert body["gpu_name"] == {"in": ["RTX 4090"]}
    assert body["gpu_ram"] == {"gte": 20000}  # MB
    assert body["dph_total"] == {"lte": 0.5}
    assert body["direct_port_count"] == {"gte": 1}
    assert body["num_gpus"] == {"eq": 1}
    assert body["type"] == "on-demand" and body["allocated_storage"] == 50 and body["order"] == [["dph_total", "asc"]]
    assert body["verified"] == {"eq": True} and body["rented"] == {"eq": False}
    # 1001 and 1002 qualify; 1006 has no direct port, 1005 has two GPUs.
    assert [o.id for o in offers] == ["1002", "1001"]
    o = offers[0]
    assert o.provider == "vastai" and o.gpu_name == "RTX 4090" and o.gpu_count == 1
    assert o.vram_gb == pytest.approx(24.564)
    assert o.ram_gb == pytest.approx(64.0)  # cpu_ram is MB (the Flux estimate checks host memory with it)
    # dph_total folds in 50 GB of storage at $0.20/GB/month.
    assert o.price_per_hour == pytest.approx(0.29 + 50 * 0.20 / 720, rel=1e-4)
    assert o.storage_price_gb_month == 0.0 and o.location == "Quebec, CA" and o.cuda_version == 12.8


def test_search_regions_and_interruptible_prices_at_min_bid(vast, sleeper):
    offers = make(vast, sleeper).offers(rtx4090(regions=("US",), interruptible=True))
    body = vast.requests_to("POST", "/api/v0/bundles/")[0].json()
    assert body["type"] == "bid" and body["geolocation"] == {"in": ["US"]}
    assert [o.id for o in offers] == ["1001"]  # 1002 is in CA
    offers = make(vast, sleeper).offers(rtx4090(interruptible=True))
    assert {o.id: o.price_per_hour for o in offers} == {"1002": 0.15, "1001": 0.18}
    assert offers[0].storage_price_gb_month == 0.20  # storage shown on top of the bid
    assert all(o.interruptible for o in offers)


def test_search_without_key_works(vast, sleeper):
    offers = make(vast, sleeper, key=None).offers(ResourceRequest())
    assert offers and "authorization" not in vast.requests_to("POST", "/api/v0/bundles/")[0].headers


def test_create_sends_documented_body_and_attaches_per_job_key(vast, sleeper):
    p = make(vast, sleeper)
    inst = p.create(p.offers(rtx4090())[0], spec())
    assert inst.status is InstanceStatus.PENDING and inst.label == "lorarun-7f3a" and inst.provider == "vastai"
    put = vast.requests_to("PUT", "/api/v0/asks/1002/")[0]
    body = put.json()
    assert put.headers["authorization"] == f"Bearer {API_KEY}"
    assert body["image"] == "lorarun/trainer:1" and body["disk"] == 40 and body["runtype"] == "ssh_direc ssh_proxy"
    assert body["env"] == {"LORARUN_JOB": "7f3a", "-p 22:22": "1"}
    assert body["label"] == "lorarun-7f3a" and body["onstart"].endswith("\ntouch ~/.no_auto_tmux")
    assert body["onstart"].startswith(IMAGE_ONSTART)  # the image's start-up, run from Vast's onstart
    assert "price" not in body  # on-demand
    attach = vast.requests_to("POST", f"/api/v0/instances/{inst.id}/ssh/")
    assert [r.json() for r in attach] == [{"ssh_key": PUBKEY}]
    assert vast.instances[int(inst.id)].ssh_keys == [PUBKEY]


def test_create_refuses_env_carrying_the_api_key(vast, sleeper):
    p = make(vast, sleeper)
    with pytest.raises(ValueError):
        p.create(p.offers(rtx4090())[0], spec(env=(("LEAK", API_KEY),)))
    assert vast.requests_to("PUT", "/api/v0/asks/") == []


def test_wait_for_running_through_get_then_direct_ssh(vast, sleeper):
    p = make(vast, sleeper)
    inst = p.create(p.offers(rtx4090())[0], spec())
    seen = []
    for _ in range(10):
        got = p.get(inst.id)
        seen.append(got.status)
        if got.status is InstanceStatus.RUNNING:
            break
    assert seen == [InstanceStatus.PENDING, InstanceStatus.PENDING, InstanceStatus.RUNNING]
    fi = vast.instances[int(inst.id)]
    assert got.ssh is not None and got.ssh.host == fi.host and got.ssh.port == fi.port and got.ssh.username == "root"
    assert ("ssh", "direct") in got.extra and got.label == "lorarun-7f3a" and got.gpu_name == "RTX 4090"


def test_proxy_ssh_only_without_direct_port(sleeper):
    offers = [o for o in __import__("fakes.vast_server").vast_server.default_offers() if o["id"] == 1006]
    with FakeVast(offers=offers, boot_polls=0) as fake:
        p = make(fake, sleeper)
        offer = p.offers(ResourceRequest())  # filtered out: direct_port_count 0
        assert offer == []
        from lorarun.provider_adapters.base import Offer

        inst = p.create(Offer("vastai", "1006", "RTX 4090", 1, 24.5, 0.3), spec())
        p.get(inst.id)
        got = p.get(inst.id)
        assert got.status is InstanceStatus.RUNNING and ("ssh", "proxy") in got.extra
        assert (got.ssh.host, got.ssh.port) == (fake.instances[int(inst.id)].host, fake.instances[int(inst.id)].port)


def test_status_mapping_exited_and_offline(vast, sleeper):
    p = make(vast, sleeper)
    inst = p.create(p.offers(rtx4090())[0], spec())
    vast.set_status(inst.id, "exited", status_msg="Error: OCI runtime create failed")
    got = p.get(inst.id)
    assert got.status is InstanceStatus.STOPPED and "OCI" in got.status_message and got.ssh is None
    assert got.start_failure.startswith("the container exited")
    vast.set_status(inst.id, "offline")
    assert p.get(inst.id).status is InstanceStatus.ERROR and "offline" in p.get(inst.id).start_failure


def test_created_with_an_oci_error_is_a_failed_start_at_once(vast, sleeper):
    """dstack's rule (backends/vastai/compute.py): `created` + ": OCI runtime create failed:" never boots."""
    vast.start_failures[1002] = "oci"
    p = make(vast, sleeper)
    inst = p.create(p.offers(rtx4090())[0], spec())
    got = p.get(inst.id)
    assert got.status is InstanceStatus.ERROR and got.start_failure.startswith("the container could not start")
    assert "OCI runtime create failed" in got.start_failure and got.machine == str(vast.offers[1002]["machine_id"])
    vast.set_status(inst.id, "loading", status_msg=None)  # an ordinary pull is not a failure
    assert p.get(inst.id).start_failure == "" and p.get(inst.id).status is InstanceStatus.PENDING


def test_outbid_is_a_failed_start(vast, sleeper):
    vast.start_failures[1002] = "outbid"
    p = make(vast, sleeper)
    got = p.get(p.create(p.offers(rtx4090())[0], spec()).id)
    assert got.status is InstanceStatus.STOPPED and got.start_failure.startswith("outbid")


def test_silent_direct_port_comes_with_the_proxy_as_fallback(sleeper):
    with FakeVast(boot_polls=0, direct_ssh_silent=True) as fake:
        p = make(fake, sleeper)
        inst = p.create(p.offers(rtx4090())[0], spec())
        got = p.get(inst.id)
        fi = fake.instances[int(inst.id)]
        assert ("ssh", "direct") in got.extra and got.ssh.port == fi.direct_port != fi.port
        assert [(e.host, e.port) for e in got.ssh_fallbacks] == [(fi.host, fi.port)]  # where the sshd answers


def test_secure_cloud_is_read_from_hosting_type(vast, sleeper):
    offers = {o.id: o for o in make(vast, sleeper).offers(ResourceRequest(limit=50))}
    assert offers["1004"].secure_cloud is True and offers["1001"].secure_cloud is False  # never None on real rows
    assert offers["1001"].machine == str(vast.offers[1001]["machine_id"])
    secure = make(vast, sleeper).offers(ResourceRequest(secure_cloud_only=True))
    assert [o.id for o in secure] == ["1004"]


def test_destroy_answering_200_success_false_is_retried_until_it_is_done(vast, sleeper):
    p = make(vast, sleeper)
    inst = p.create(p.offers(rtx4090())[0], spec())
    vast.destroy_refusals = 2
    p.destroy(inst.id)
    assert inst.id not in vast.live_ids() and len(vast.requests_to("DELETE", f"/api/v0/instances/{inst.id}/")) == 3
    assert len(sleeper.waits) == 2


def test_destroy_twice_and_get_none(vast, sleeper):
    p = make(vast, sleeper)
    inst = p.create(p.offers(rtx4090())[0], spec())
    p.destroy(inst.id)
    p.destroy(inst.id)  # no_such_instance → success
    assert p.get(inst.id) is None
    assert vast.destroyed == [int(inst.id)]
    assert len(vast.requests_to("DELETE", f"/api/v0/instances/{inst.id}/")) == 2


def test_vanished_instance_reads_as_none(vast, sleeper):
    p = make(vast, sleeper)
    inst = p.create(p.offers(rtx4090())[0], spec())
    vast.vanish(inst.id)
    assert p.get(inst.id) is None
    p.destroy(inst.id)


def test_list_owned_paginates_and_filters_prefix(vast, sleeper):
    many = [dict(o, id=5000 + i, machine_id=500 + i) for i, o in enumerate([vast.offers[1001]] * 30)]
    with FakeVast(offers=many) as fake:
        p = make(fake, sleeper)
        ids = set()
        for i, o in enumerate(many):
            label = job_label(f"j{i}") if i % 3 else f"someone-else-{i}"
            from lorarun.provider_adapters.base import Offer

            inst = p.create(Offer("vastai", str(o["id"]), "RTX 4090", 1, 24.5, 0.3), spec(label=label))
            if i % 3:
                ids.add(inst.id)
        owned = p.list_owned()
        assert {i.id for i in owned} == ids and len(owned) == 20
        assert all(i.label.startswith("lorarun-") for i in owned)
        pages = fake.requests_to("GET", "/api/v1/instances/")
        assert len(pages) == 2 and "after_token" in pages[1].query


def test_self_destruct_and_kill_hint(vast, sleeper):
    p = make(vast, sleeper)
    sd = p.self_destruct()
    assert (sd.id_env, sd.key_env) == ("CONTAINER_ID", "CONTAINER_API_KEY")
    [way] = sd.ways
    assert (way.kind, way.method, way.url) == ("http", "DELETE", f"{vast.url}/api/v0/instances/{{instance_id}}/")
    assert [(c.style, c.url) for c in sd.checks] == [("vast_show", way.url + "?owner=me")]  # as vast-cli
    assert "vastai destroy instance 42" in p.kill_hint("42")


def test_self_destruct_works_with_instance_key_only_on_its_own_instance(vast, sleeper):
    from lorarun.provider_adapters import http

    p = make(vast, sleeper)
    a = p.create(p.offers(rtx4090())[0], spec())
    b = p.create(p.offers(rtx4090())[0], spec())
    [way] = p.self_destruct().ways
    key_a = vast.instances[int(a.id)].instance_api_key
    other = http.request(way.method, way.url.format(instance_id=b.id), headers={"Authorization": f"Bearer {key_a}"})
    assert other.status == 401 and b.id in vast.live_ids()
    own = http.request(way.method, way.url.format(instance_id=a.id), headers={"Authorization": f"Bearer {key_a}"})
    assert own.status == 200 and a.id not in vast.live_ids()


# -- errors ---------------------------------------------------------------------------------------------------
def test_bad_key_is_auth_error_everywhere(vast, sleeper):
    p = make(vast, sleeper, key="wrong-key-123456")
    with pytest.raises(AuthError) as e:
        p.offers(rtx4090())  # /bundles/ answers 404 "Invalid user key"
    assert e.value.status == 404
    with pytest.raises(AuthError) as e:
        p.get("123")
    assert e.value.status == 401
    with pytest.raises(AuthError):
        p.destroy("123")
    assert sleeper.waits == []  # never retried


def test_offer_taken_is_offer_gone_410_and_unknown_ask_404(vast, sleeper):
    p = make(vast, sleeper)
    offer = p.offers(rtx4090())[0]
    p.create(offer, spec())
    with pytest.raises(OfferGoneError) as e:
        p.create(offer, spec())
    assert e.value.status == 410
    from lorarun.provider_adapters.base import Offer

    with pytest.raises(OfferGoneError) as e:
        p.create(Offer("vastai", "999999", "RTX 4090", 1, 24, 0.3), spec())
    assert e.value.status == 404


def test_insufficient_credit(vast, sleeper):
    vast.credit = 0
    p = make(vast, sleeper)
    with pytest.raises(InsufficientFundsError):
        p.create(p.offers(rtx4090())[0], spec())


def test_low_bid_returns_new_contract_as_create_failed(vast, sleeper):
    p = make(vast, sleeper)
    offer = p.offers(rtx4090(interruptible=True))[0]
    with pytest.raises(CreateFailed) as e:
        p.create(offer, spec(bid_price_per_hour=0.01))
    assert e.value.instance_id in vast.live_ids()
    assert vast.requests_to("PUT", "/api/v0/asks/")[0].json()["price"] == 0.01
    p.destroy(e.value.instance_id)
    assert vast.live_ids() == []


def test_ssh_attach_failure_still_reports_the_id(vast, sleeper):
    p = make(vast, sleeper)
    vast.fail_next(
        "POST",
        "/api/v0/instances/",
        status=400,
        body={"success": False, "error": "no_ssh_key", "msg": "No ssh key provided"},
    )
    with pytest.raises(CreateFailed) as e:
        p.create(p.offers(rtx4090())[0], spec())
    assert e.value.instance_id in vast.live_ids()


def test_interrupt_during_attach_keeps_the_id_on_the_exception(vast, sleeper, monkeypatch):
    p = make(vast, sleeper)

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(p.client, "attach_ssh_key", interrupted)
    with pytest.raises(KeyboardInterrupt) as e:
        p.create(p.offers(rtx4090())[0], spec())
    assert e.value.instance_id in vast.live_ids()
    assert any(e.value.instance_id in note for note in e.value.__notes__)


def test_429_plain_text_is_retried_with_backoff(vast, sleeper):
    p = make(vast, sleeper)
    vast.fail_next("POST", "/api/v0/bundles/", status=429, times=2)
    assert p.offers(rtx4090())
    assert len(sleeper.waits) == 2
    assert len(vast.requests_to("POST", "/api/v0/bundles/")) == 3


def test_429_json_body_exhausts_into_rate_limit_error(vast, sleeper):
    p = make(vast, sleeper)
    vast.fail_next(
        "GET",
        "/api/v0/instances/",
        status=429,
        times=50,
        body={"detail": "API requests too frequent endpoint threshold=2.0"},
    )
    with pytest.raises(RateLimitError) as e:
        p.get("8000001")
    assert e.value.retry_after is None and "threshold" in str(e.value)
    assert len(vast.requests_to("GET", "/api/v0/instances/")) == retry.DEFAULT_POLICY.max_attempts


def test_destroy_survives_a_429_storm_with_the_stronger_policy(vast, sleeper):
    p = make(vast, sleeper)
    inst = p.create(p.offers(rtx4090())[0], spec())
    vast.fail_next(
        "DELETE",
        "/api/v0/instances/",
        status=429,
        times=7,
        body={"success": False, "error": "rate_limit_exceeded", "msg": "API requests too frequent"},
    )
    p.destroy(inst.id)  # 7 failures > DEFAULT_POLICY's 5 attempts
    assert inst.id not in vast.live_ids() and len(sleeper.waits) == 7


def test_5xx_is_transient_and_retried(vast, sleeper):
    p = make(vast, sleeper)
    vast.fail_next("GET", "/api/v0/instances/", status=502, times=1)
    assert p.get("1") is None
    vast.fail_next("GET", "/api/v0/instances/", status=503, times=99)
    with pytest.raises(TransientError):
        p.get("1")


def test_create_is_not_retried_after_5xx(vast, sleeper):
    p = make(vast, sleeper)
    offer = p.offers(rtx4090())[0]
    vast.fail_next("PUT", "/api/v0/asks/", status=500, times=1)
    with pytest.raises(TransientError):
        p.create(offer, spec())
    assert len(vast.requests_to("PUT", "/api/v0/asks/")) == 1


def test_create_invalid_args_is_provider_error(vast, sleeper):
    p = make(vast, sleeper)
    with pytest.raises(ProviderError) as e:
        p.create(p.offers(rtx4090())[0], spec(image=""))
    assert type(e.value) is ProviderError and e.value.status == 400


def test_connection_refused_is_transient(sleeper):
    with FakeVast() as fake:
        url = fake.url
    p = VastProvider(API_KEY, base_url=url, sleep=sleeper, clock=sleeper.clock)
    with pytest.raises(TransientError) as e:
        p.get("1")
    assert API_KEY not in str(e.value)


def test_key_never_in_errors_or_logs(vast, sleeper, caplog):
    caplog.set_level(logging.DEBUG)
    p = make(vast, sleeper)
    vast.fail_next("POST", "/api/v0/bundles/", status=429, times=99, body=f"echo {API_KEY}")
    with pytest.raises(RateLimitError) as e:
        p.offers(rtx4090())
    assert API_KEY not in str(e.value) and API_KEY not in caplog.text and API_KEY not in repr(p)
    assert "***" in str(e.value)


@pytest.mark.parametrize(
    "status,body",
    [
        (404, {"success": False, "error": "not_found", "msg": "Instance not found"}),  # the docs' shape (§1.5)
        (404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"}),  # dstack's real one
        (404, "Not Found"),
    ],
)
def test_destroy_not_found_shapes_are_success(vast, sleeper, status, body):
    vast.fail_next("DELETE", "/api/v0/instances/", status=status, body=body)
    make(vast, sleeper).destroy("8000001")
    assert sleeper.waits == []


def test_destroy_invalid_id_is_an_error(vast, sleeper):
    with pytest.raises(ProviderError) as e:
        make(vast, sleeper).destroy("not-a-number")
    assert e.value.status == 400


def test_403_auth_error(vast, sleeper):
    vast.fail_next("GET", "/api/v0/instances/", status=403)
    with pytest.raises(AuthError):
        make(vast, sleeper).get("1")


def test_429_retry_after_header_is_honoured_if_present(vast, sleeper):
    vast.fail_next("GET", "/api/v0/instances/", status=429, headers={"Retry-After": "9"})
    assert make(vast, sleeper).get("1") is None
    assert sleeper.waits and sleeper.waits[0] >= 9


def test_hooks_back_the_instance_with_a_real_endpoint(sleeper):
    created, destroyed = [], []

    def on_create(instance_id, env, public_key):
        created.append((instance_id, env, public_key))
        return "127.0.0.1", 2222

    with FakeVast(on_create=on_create, on_destroy=destroyed.append) as fake:
        p = make(fake, sleeper)
        inst = p.create(p.offers(rtx4090())[0], spec())
        got = None
        while got is None or got.status is not InstanceStatus.RUNNING:
            got = p.get(inst.id)
        assert (got.ssh.host, got.ssh.port) == ("127.0.0.1", 2222)
        [(iid, env, key)] = created
        assert iid == inst.id and key == PUBKEY and env["LORARUN_JOB"] == "7f3a"
        assert env["CONTAINER_ID"] == inst.id and env["CONTAINER_API_KEY"] == fake.instances[int(iid)].instance_api_key
        assert "-p 22:22" not in env
        p.destroy(inst.id)
        assert destroyed == [inst.id]


def test_base_url_from_vast_url_env(vast, sleeper, monkeypatch):
    monkeypatch.setenv("VAST_URL", vast.url)
    p = VastProvider(API_KEY, sleep=sleeper, clock=sleeper.clock)
    assert p.client.base_url == vast.url and p.offers(rtx4090())


def test_dstacks_reliability_and_network_floors_apply_where_the_user_sets_none(vast, sleeper):
    # A cheap host with a poor record and a slow line: dstack's floors (reliability2 >= 0.9, inet_down > 128,
    # dstackai/dstack `backends/vastai/compute.py`) keep it out unless the user asks for less.
    shaky = dict(vast.offers[1001], id=1099, ask_contract_id=1099, machine_id=39099, dph_base=0.05, min_bid=0.02)
    shaky.update(reliability=0.85, reliability2=0.85, inet_down=100.0)
    vast.offers[1099] = shaky
    offers = make(vast, sleeper).offers(rtx4090())
    body = vast.requests_to("POST", "/api/v0/bundles/")[-1].json()
    assert body["reliability2"] == {"gte": 0.9} and body["inet_down"] == {"gte": 129.0}
    assert "1099" not in [o.id for o in offers] and offers
    mine = make(vast, sleeper).offers(rtx4090(min_reliability=0.8, min_inet_down_mbps=50))
    body = vast.requests_to("POST", "/api/v0/bundles/")[-1].json()
    assert body["reliability2"] == {"gte": 0.8} and body["inet_down"] == {"gte": 50}
    assert mine[0].id == "1099"  # the cheapest, now that the user's own floors let it in


def test_the_estimate_footnote_names_the_default_floors():
    from lorarun.provider_adapters.vastai.adapter import floors_note

    note = floors_note(0.0, 0.0)
    assert "reliability ≥ 0.9" in note and "≥ 129 Mb/s" in note and "min_reliability" in note
    assert "≥ 200 Mb/s" in floors_note(0.0, 200.0)
    assert floors_note(0.95, 200.0) is None  # both set by the user: nothing of ours narrowed the search
