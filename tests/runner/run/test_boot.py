"""Failed starts and silent SSH ports (runner/run/boot.py) with an in-memory provider and a stand-in pipeline."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from lorarun.provider_adapters.base import Instance, InstanceStatus, Offer, SSHEndpoint
from lorarun.provider_adapters.errors import ProviderError
from lorarun.runner.price.estimate import Estimate, Phases
from lorarun.runner.run import boot
from lorarun.runner.run.poller import Clock


class Provider:
    name = "runpod"

    def __init__(self, destroy_fails: bool = False):
        self.live = {"i1"}
        self.destroy_fails = destroy_fails

    def destroy(self, instance_id):
        if self.destroy_fails:
            raise ProviderError("refused", provider=self.name)
        self.live.discard(instance_id)

    def get(self, instance_id):
        return None if instance_id not in self.live else Instance(self.name, instance_id, "l", InstanceStatus.RUNNING)

    def kill_hint(self, instance_id):
        return f"kill {instance_id}"


def est(offer_id: str, *, machine: str = "", secure: bool | None = True) -> Estimate:
    offer = Offer("runpod", offer_id, "RTX 4090", 1, 24, 0.3, secure_cloud=secure, machine=machine)
    phases = Phases(boot=60, image_pull=0, model_download=0, upload=0, prepare=0, train=600, sampling=0, download=0)
    return Estimate(
        offer=offer,
        phases=phases,
        seconds_per_step=0.3,
        step_source="t",
        step_kind="shipped",
        boot_source="t",
        compute_cost=0.3,
        storage_cost=0.0,
        vram_needed_gb=6,
    )


def pipeline(provider, ranked, failed_offer):
    state = SimpleNamespace(leaked_instance_ids=())
    run = SimpleNamespace(state=state)

    def record(run_, **changes):
        run_.state = SimpleNamespace(**{**vars(run_.state), **changes})

    instance = Instance("runpod", "i1", "lorarun-j", InstanceStatus.RUNNING)
    return SimpleNamespace(
        runs=[run],
        record=record,
        start_failures=0,
        provider=provider,
        ranked=list(ranked),
        clock=Clock(now=lambda: 0.0, sleep=lambda s: None, wall=lambda: 0.0),
        rental=SimpleNamespace(instance=instance, transport=None, offer=failed_offer),
    )


def test_failed_start_is_destroyed_recorded_and_its_machine_excluded():
    ranked = [est("a", machine="m1"), est("b", machine="m1"), est("c", machine="m2")]
    p = pipeline(Provider(), ranked, ranked[0].offer)
    failed = boot.StartFailed(Instance("runpod", "i1", "l", InstanceStatus.ERROR, machine="m1"), "OCI error")
    assert boot.fall_back_after(p, failed) is True
    assert p.runs[0].state.leaked_instance_ids == ("i1",) and p.provider.live == set()
    assert [e.offer.id for e in p.ranked] == ["c"] and p.rental.instance is None


def test_no_public_ip_moves_to_secure_cloud_offers():
    ranked = [est("x::COMMUNITY", secure=False), est("y::COMMUNITY", secure=False), est("y::SECURE")]
    p = pipeline(Provider(), ranked, ranked[0].offer)
    failed = boot.StartFailed(Instance("runpod", "i1", "l", InstanceStatus.RUNNING), "no public IP: port 22 …")
    assert boot.fall_back_after(p, failed) is True
    assert [e.offer.id for e in p.ranked] == ["y::SECURE"]


def test_an_unconfirmed_destroy_stops_renting_and_keeps_the_instance_for_teardown():
    ranked = [est("a"), est("b")]
    p = pipeline(Provider(destroy_fails=True), ranked, ranked[0].offer)
    failed = boot.StartFailed(Instance("runpod", "i1", "l", InstanceStatus.ERROR), "outbid")
    assert boot.fall_back_after(p, failed) is False
    assert p.rental.instance is not None and p.runs[0].state.leaked_instance_ids == ("i1",)


def test_fallbacks_are_bounded():
    ranked = [est(str(i)) for i in range(10)]
    p = pipeline(Provider(), ranked, ranked[0].offer)
    results = []
    for _ in range(boot.MAX_FALLBACKS + 1):
        p.provider.live = {"i1"}
        p.rental.instance = Instance("runpod", "i1", "l", InstanceStatus.ERROR)
        p.rental.offer = p.ranked[0].offer
        results.append(boot.fall_back_after(p, boot.StartFailed(p.rental.instance, "exited")))
    assert results == [True] * boot.MAX_FALLBACKS + [False]


def test_ssh_candidates_rotate_after_a_few_silent_tries():
    direct, proxy = SSHEndpoint("198.51.100.1", 20000), SSHEndpoint("ssh5.vast.ai", 10882)
    inst = Instance("vastai", "1", "l", InstanceStatus.RUNNING, ssh=direct, ssh_fallbacks=(proxy,))
    c = boot.SSHCandidates(inst)
    switches = [c.failed() for _ in range(boot.TRIES_PER_ENDPOINT * 2)]
    assert switches[boot.TRIES_PER_ENDPOINT - 1] == proxy and switches[-1] == direct
    assert sum(s is not None for s in switches) == 2
    assert boot.with_endpoint(inst, proxy) == dataclasses.replace(inst, ssh=proxy)
    assert boot.SSHCandidates(dataclasses.replace(inst, ssh_fallbacks=())).failed() is None  # nothing else to try
