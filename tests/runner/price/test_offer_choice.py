"""Renting the cheapest fitting offer, and moving on when an offer is gone."""

import pytest

from lorarun.provider_adapters.base import Instance, InstanceSpec, InstanceStatus, Offer, Provider
from lorarun.provider_adapters.errors import AuthError, CreateFailed, NoCapacityError, OfferGoneError
from lorarun.runner.errors import BudgetError
from lorarun.runner.price.estimate import Estimate, Phases
from lorarun.runner.price.offer_choice import create_cheapest


class MemoryProvider:
    """Implements the Provider Protocol in memory; `failures` maps offer id → exception raised by create()."""

    name = "vastai"

    def __init__(self, failures=None):
        self.failures = dict(failures or {})
        self.created: list[str] = []
        self.attempts: list[str] = []
        self.specs: list[InstanceSpec] = []

    def offers(self, req):
        return []

    def create(self, offer, spec):
        self.attempts.append(offer.id)
        self.specs.append(spec)
        if offer.id in self.failures:
            raise self.failures[offer.id]
        instance_id = f"i-{offer.id}"
        self.created.append(instance_id)
        return Instance(
            provider=self.name,
            id=instance_id,
            label=spec.label,
            status=InstanceStatus.PENDING,
            price_per_hour=offer.price_per_hour,
            gpu_name=offer.gpu_name,
            gpu_count=offer.gpu_count,
        )

    def get(self, instance_id):
        return None

    def destroy(self, instance_id):
        pass

    def list_owned(self):
        return []

    def self_destruct(self):
        return None

    def kill_hint(self, instance_id):
        return f"destroy {instance_id}"


def est(offer_id: str, cost: float, excluded: str | None = None, provider: str = "vastai") -> Estimate:
    offer = Offer(provider=provider, id=offer_id, gpu_name="RTX 4090", gpu_count=1, vram_gb=24, price_per_hour=cost)
    phases = Phases(boot=60, image_pull=0, model_download=0, upload=0, prepare=0, train=3540, sampling=0, download=0)
    return Estimate(
        offer=offer,
        phases=phases,
        seconds_per_step=0.3,
        step_source="t",
        step_kind="shipped",
        boot_source="t",
        compute_cost=cost,
        storage_cost=0.0,
        vram_needed_gb=6,
        excluded=excluded,
    )


def spec_for(e: Estimate) -> InstanceSpec:
    return InstanceSpec(
        label="lorarun-job",
        image="img",
        disk_gb=40,
        ssh_public_key="ssh-ed25519 AAAA",
        bid_price_per_hour=e.offer.price_per_hour,
    )


def test_memory_provider_is_a_provider():
    assert isinstance(MemoryProvider(), Provider)


def test_takes_the_first_fitting_offer():
    p = MemoryProvider()
    ranked = [est("a", 0.1), est("b", 0.2), est("x", 0.05, excluded="too little VRAM")]
    chosen, inst = create_cheapest(p, ranked, spec_for, on_instance_id=pytest.fail)
    assert chosen.offer.id == "a" and inst.id == "i-a"
    assert p.attempts == ["a"]
    assert p.specs[0].bid_price_per_hour == 0.1  # make_spec saw the chosen estimate


def test_moves_on_when_an_offer_is_gone_or_full():
    p = MemoryProvider(
        {"a": OfferGoneError("no_such_ask", provider="vastai"), "b": NoCapacityError("no machines", provider="vastai")}
    )
    chosen, inst = create_cheapest(p, [est("a", 0.1), est("b", 0.2), est("c", 0.3)], spec_for, pytest.fail)
    assert chosen.offer.id == "c" and inst.id == "i-c"
    assert p.attempts == ["a", "b", "c"]


def test_create_failed_hands_the_id_over_then_moves_on():
    seen: list[str] = []
    p = MemoryProvider({"a": CreateFailed("bid failed", instance_id="leaked-7", provider="vastai")})
    chosen, _ = create_cheapest(p, [est("a", 0.1), est("b", 0.2)], spec_for, seen.append)
    assert seen == ["leaked-7"]
    assert chosen.offer.id == "b"


def test_nothing_fits_is_a_budget_error_with_reasons():
    ranked = [
        est("a", 2.0, excluded="predicted $2.00 is over max_cost $1.00"),
        est("b", 3.0, excluded="predicted $3.00 is over max_cost $1.00"),
        est("c", 0.1, excluded="too little VRAM for this job (needs ~17.0 GB, RTX 3060 has 12.0 GB)"),
    ]
    with pytest.raises(BudgetError) as info:
        create_cheapest(MemoryProvider(), ranked, spec_for, pytest.fail)
    msg = str(info.value)
    assert "none of 3 offer(s) fits" in msg
    assert "predicted $N is over max_cost $N (2)" in msg
    assert "too little VRAM for this job (1)" in msg
    with pytest.raises(BudgetError, match="no offers matched"):
        create_cheapest(MemoryProvider(), [], spec_for, pytest.fail)


def test_all_gone_is_no_capacity_after_max_attempts():
    gone = {k: OfferGoneError("taken", provider="vastai") for k in "abcdefg"}
    p = MemoryProvider(gone)
    ranked = [est(k, 0.1 * i) for i, k in enumerate("abcdefg", 1)]
    with pytest.raises(NoCapacityError, match="2 more fitting offer"):
        create_cheapest(p, ranked, spec_for, pytest.fail, max_attempts=5)
    assert p.attempts == list("abcde")


def test_other_errors_propagate():
    p = MemoryProvider({"a": AuthError("bad key", provider="vastai")})
    with pytest.raises(AuthError):
        create_cheapest(p, [est("a", 0.1), est("b", 0.2)], spec_for, pytest.fail)
    assert p.attempts == ["a"]


def test_offers_of_other_providers_are_skipped():
    p = MemoryProvider()
    chosen, _ = create_cheapest(p, [est("r", 0.05, provider="runpod"), est("v", 0.1)], spec_for, pytest.fail)
    assert chosen.offer.id == "v"
