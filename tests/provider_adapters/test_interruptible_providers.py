"""Interruptible rentals against the fake APIs over real HTTP: Vast bids (`type: bid`, `price` in the create,
outbid → stopped) and RunPod spot (`minimumBidPrice`, `podRentInterruptable` with `bidPerGpu`, spot exit → EXITED
or gone). Sources beside each behaviour in the fakes and adapters (providers.md §1.2-§1.4, §1.8, §2.3, §2.8)."""

from __future__ import annotations

import dataclasses

import pytest

from lorarun.provider_adapters.base import InstanceStatus, Offer, ResourceRequest
from lorarun.provider_adapters.errors import CreateFailed, NoCapacityError
from lorarun.runner.run.interruption import interruption_reason

from .runpod.test_runpod import RTX4090
from .runpod.test_runpod import make as make_runpod
from .runpod.test_runpod import spec as runpod_spec
from .vastai.test_vastai import make as make_vast
from .vastai.test_vastai import rtx4090
from .vastai.test_vastai import spec as vast_spec


# -- Vast.ai ---------------------------------------------------------------------------------------------------------
def test_vast_bid_search_prices_at_min_bid_and_create_sends_the_bid(vast, sleeper):
    p = make_vast(vast, sleeper)
    bids = p.offers(rtx4090(interruptible=True))
    [search] = [r.json() for r in vast.requests_to("POST", "/api/v0/bundles/")]
    assert search["type"] == "bid"  # vast-cli maps "interruptible" to "bid" (providers.md §1.2)
    best = bids[0]
    assert best.interruptible and best.price_per_hour == vast.offers[int(best.id)]["min_bid"]
    bid = round(best.price_per_hour * 1.1, 4)
    inst = p.create(dataclasses.replace(best, price_per_hour=bid), vast_spec())
    [create] = [r.json() for r in vast.requests_to("PUT", f"/api/v0/asks/{best.id}/")]
    assert create["price"] == bid  # "price": bid $/h per machine; left out on demand (providers.md §1.3)
    assert vast.instances[int(inst.id)].is_bid


def test_vast_on_demand_create_sends_no_price(vast, sleeper):
    p = make_vast(vast, sleeper)
    [best, *_] = p.offers(rtx4090())
    p.create(best, vast_spec())
    [create] = [r.json() for r in vast.requests_to("PUT", f"/api/v0/asks/{best.id}/")]
    assert "price" not in create and not best.interruptible


def test_vast_bid_below_the_floor_answers_an_error_with_a_contract_to_destroy(vast, sleeper):
    p = make_vast(vast, sleeper)
    best = p.offers(rtx4090(interruptible=True))[0]
    with pytest.raises(CreateFailed) as failed:
        p.create(dataclasses.replace(best, price_per_hour=best.price_per_hour / 2), vast_spec())
    assert failed.value.instance_id  # created stopped, new_contract still returned (providers.md §1.3)


@pytest.mark.parametrize("intended", ["stopped", "running"])
def test_vast_outbid_reads_as_an_interruption(vast, sleeper, intended):
    p = make_vast(vast, sleeper)
    best = p.offers(rtx4090(interruptible=True))[0]
    inst = p.create(best, vast_spec())
    vast.run_now(inst.id)
    assert interruption_reason(p.get(inst.id)) is None
    vast.interrupt(inst.id, intended_status=intended)
    got = p.get(inst.id)
    assert got.status is InstanceStatus.STOPPED
    assert "outbid" in interruption_reason(got)
    assert inst.id in vast.interrupted
    p.destroy(inst.id)  # a stopped bid still holds its disk: destroyed, and gone
    assert p.get(inst.id) is None


# -- RunPod ----------------------------------------------------------------------------------------------------------
def test_runpod_spot_offers_are_priced_at_the_minimum_bid(runpod, sleeper):
    p = make_runpod(runpod, sleeper)
    req = ResourceRequest(gpu_names=("RTX 4090",))
    [on_demand_secure, *_] = [o for o in p.offers(req) if o.secure_cloud]
    spot = [o for o in p.offers(dataclasses.replace(req, interruptible=True)) if o.secure_cloud]
    assert spot and all(o.interruptible for o in spot)
    assert spot[0].price_per_hour == pytest.approx(round(on_demand_secure.price_per_hour * 0.6, 3))


@pytest.mark.parametrize("cloud", ["SECURE", "COMMUNITY"])
def test_runpod_spot_create_is_pod_rent_interruptable_with_bid_per_gpu(runpod, sleeper, cloud):
    p = make_runpod(runpod, sleeper)
    offer = Offer("runpod", f"{RTX4090}::{cloud}", "RTX 4090", 2, 24, 1.0, interruptible=True)
    inst = p.create(offer, runpod_spec())
    assert runpod.requests_to("POST", "/v2/pods") == []  # v2 has no spot create (providers.md §2.3)
    [call] = [r.json() for r in runpod.requests_to("POST", "/graphql") if "podRent" in r.json()["query"]]
    assert "podRentInterruptable" in call["query"]
    pod_input = call["variables"]["input"]
    assert pod_input["bidPerGpu"] == 0.5 and pod_input["cloudType"] == cloud  # per GPU, as dstack divides
    assert pod_input["gpuCount"] == 2 and pod_input["volumeInGb"] == 0
    assert runpod.pods[inst.id].spot and ("spot", "true") in inst.extra


def test_runpod_spot_bid_under_the_floor_is_refused_as_no_capacity(runpod, sleeper):
    p = make_runpod(runpod, sleeper)
    offer = Offer("runpod", f"{RTX4090}::SECURE", "RTX 4090", 1, 24, 0.05, interruptible=True)
    with pytest.raises(NoCapacityError, match="minimum bid"):
        p.create(offer, runpod_spec())
    assert runpod.pods == {}


@pytest.mark.parametrize("gone", [False, True])
def test_runpod_spot_exit_reads_as_an_interruption(runpod, sleeper, gone):
    p = make_runpod(runpod, sleeper)
    offer = Offer("runpod", f"{RTX4090}::SECURE", "RTX 4090", 1, 24, 0.45, interruptible=True)
    inst = p.create(offer, runpod_spec())
    runpod.run_now(inst.id)
    assert interruption_reason(p.get(inst.id)) is None
    runpod.interrupt(inst.id, gone=gone)
    got = p.get(inst.id)
    assert (got is None) if gone else (got.status is InstanceStatus.STOPPED)
    assert interruption_reason(got) is not None
    p.destroy(inst.id)  # idempotent: an exited pod is terminated, a gone one is "not found" = success
    assert p.get(inst.id) is None


# -- Vast's pace: show instance once per 2 s, a 429 while booting is "not yet" --------------------------------------
def test_boot_poll_keeps_to_vasts_show_interval(vast, sleeper):
    from lorarun.runner.run import provider_pace
    from lorarun.runner.run.poller import Clock, poll

    vast.show_min_interval, vast.clock, vast.boot_polls = 2.0, sleeper.clock, 4
    p = make_vast(vast, sleeper)
    inst = p.create(p.offers(rtx4090())[0], vast_spec())
    clock = Clock(now=sleeper.clock, sleep=sleeper, wall=sleeper.clock)

    def ready():
        got = provider_pace.look(p, inst.id)
        return got if got is not provider_pace.NOT_YET and got.status is InstanceStatus.RUNNING else None

    interval = provider_pace.boot_poll_interval("vastai")
    assert interval >= 2.0 and provider_pace.boot_poll_interval("runpod") == 1.0
    assert poll(ready, what="boot", timeout=300, interval=interval, clock=clock).status is InstanceStatus.RUNNING
    assert vast.rate_limited == 0  # never asked sooner than Vast allows


def test_a_rate_limited_look_while_booting_is_not_yet_never_a_failure(vast, sleeper):
    from lorarun.runner.run import provider_pace

    vast.show_min_interval, vast.clock = 10_000.0, sleeper.clock  # every call after the first is too soon
    p = make_vast(vast, sleeper)
    inst = p.create(p.offers(rtx4090())[0], vast_spec())
    assert provider_pace.look(p, inst.id) is not provider_pace.NOT_YET
    assert provider_pace.look(p, inst.id) is provider_pace.NOT_YET
    assert vast.rate_limited >= 1


# -- RunPod registry credentials: 400 "in use" while the pod exists ---------------------------------------------------
def test_runpod_credential_is_deleted_only_once_its_pod_is_confirmed_gone(runpod, sleeper):
    from lorarun.provider_adapters.base import RegistryLogin
    from lorarun.provider_adapters.errors import ProviderError

    p = make_runpod(runpod, sleeper)
    inst = p.create(
        Offer("runpod", f"{RTX4090}::SECURE", "RTX 4090", 1, 24, 0.69),
        runpod_spec(image="ghcr.io/me/engine:1", registry_login=RegistryLogin("ghcr.io", "me", "tok")),
    )
    [credential] = runpod.registries
    with pytest.raises(ProviderError) as in_use:
        p.client.delete_registry_credential(credential)  # the pod exists: refused
    assert in_use.value.status == 400 and "in use" in str(in_use.value)
    p.destroy(inst.id)  # deletes the pod, confirms it gone, then the credential
    assert runpod.registries == {}
    deletes = [r.path for r in runpod.requests if r.method == "DELETE"]
    assert deletes.index(f"/v2/pods/{inst.id}") < len(deletes) - 1  # the pod first, the credential after


def test_gc_sweeps_lorarun_credentials_whose_pod_is_gone(runpod, sleeper):
    from lorarun.provider_adapters.base import RegistryLogin

    login = RegistryLogin("ghcr.io", "me", "tok")
    dead = make_runpod(runpod, sleeper)  # a controller that died before confirming its pod gone
    gone = dead.create(
        Offer("runpod", f"{RTX4090}::SECURE", "RTX 4090", 1, 24, 0.69), runpod_spec(registry_login=login)
    )
    runpod.vanish(gone.id)
    live = make_runpod(runpod, sleeper).create(
        Offer("runpod", f"{RTX4090}::COMMUNITY", "RTX 4090", 1, 24, 0.34),
        runpod_spec(label="lorarun-live1", registry_login=login),
    )
    runpod.registries["reg_user"] = {"name": "my-own-ghcr", "username": "me", "password": "x"}  # not ours
    swept = make_runpod(runpod, sleeper).sweep_credentials()
    assert swept == ["lorarun-9c1d-ghcr.io"]
    names = sorted(r["name"] for r in runpod.registries.values())
    assert names == ["lorarun-live1-ghcr.io", "my-own-ghcr"] and live.id in runpod.pods


def test_vast_onstart_makes_host_keys_and_starts_sshd_when_none_runs(vast, sleeper, tmp_path):
    """Vast's ssh run types replace our entrypoint, so our start-up never made host keys there: onstart does it,
    and starts sshd when none runs (a POSIX sh line; checked here by running its guard with sh)."""
    import subprocess

    from lorarun.provider_adapters.vastai.adapter import SSHD_ONSTART

    p = make_vast(vast, sleeper)
    p.create(p.offers(rtx4090())[0], vast_spec())
    [create] = [r.json() for r in vast.requests if r.method == "PUT"]
    assert create["onstart"].startswith(SSHD_ONSTART.split(";")[0] + ";")  # ssh-keygen -A comes first
    assert "/usr/sbin/sshd" in create["onstart"] and "lorarun-startup --onstart" in create["onstart"]
    guard = SSHD_ONSTART.split("||")[0].split(";", 1)[1].strip()  # the "is an sshd running" test alone
    fake_proc = tmp_path / "proc"
    (fake_proc / "12").mkdir(parents=True)
    (fake_proc / "12" / "comm").write_text("python\n")
    assert subprocess.run(["sh", "-c", guard.replace("/proc", str(fake_proc))]).returncode != 0
    (fake_proc / "13").mkdir()
    (fake_proc / "13" / "comm").write_text("sshd\n")
    assert subprocess.run(["sh", "-c", guard.replace("/proc", str(fake_proc))]).returncode == 0
