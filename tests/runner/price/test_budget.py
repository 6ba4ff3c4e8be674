"""Spend tracking from the real price and running time, and the agent's lease."""

import pytest

from lorarun.provider_adapters.base import Instance, InstanceStatus, Offer
from lorarun.runner.price.budget import SpendTracker, lease_seconds
from lorarun.runner.price.estimate import Estimate, Phases


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_estimate(total_s: float, price: float) -> Estimate:
    offer = Offer(provider="vastai", id="1", gpu_name="RTX 4090", gpu_count=1, vram_gb=24, price_per_hour=price)
    phases = Phases(boot=0, image_pull=0, model_download=0, upload=0, prepare=0, train=total_s, sampling=0, download=0)
    return Estimate(
        offer=offer,
        phases=phases,
        seconds_per_step=0.3,
        step_source="test",
        step_kind="shipped",
        boot_source="test",
        compute_cost=price * total_s / 3600,
        storage_cost=0,
        vram_needed_gb=6,
    )


def test_spent_grows_with_running_time():
    clock = Clock()
    t = SpendTracker(price_per_hour=0.36, started_at=clock.now, clock=clock)
    assert t.spent() == 0
    clock.now += 1800
    assert t.spent() == pytest.approx(0.18)
    clock.now += 1800
    assert t.spent() == pytest.approx(0.36)


def test_storage_counts_too():
    clock = Clock()
    t = SpendTracker(price_per_hour=1.0, started_at=clock.now, clock=clock, storage_per_hour=0.5)
    clock.now += 3600
    assert t.spent() == pytest.approx(1.5)


def test_from_the_instance_real_price_and_start():
    clock = Clock(10_000)
    inst = Instance(
        provider="vastai",
        id="9",
        label="lorarun-x",
        status=InstanceStatus.RUNNING,
        price_per_hour=0.5,
        started_at=9_000,
    )
    t = SpendTracker.for_instance(inst, created_at=9_100, fallback_price=0.3, clock=clock)
    assert t.price_per_hour == 0.5 and t.started_at == 9_000
    assert t.spent() == pytest.approx(0.5 * 1000 / 3600)
    # No price or start from the provider: the offer's price and the create time.
    bare = Instance(provider="vastai", id="9", label="lorarun-x", status=InstanceStatus.PENDING)
    t2 = SpendTracker.for_instance(bare, created_at=9_100, fallback_price=0.3, clock=clock)
    assert (t2.price_per_hour, t2.started_at) == (0.3, 9_100)
    # A provider start time after our create time does not hide spend.
    late = Instance(provider="vastai", id="9", label="lorarun-x", status=InstanceStatus.RUNNING, started_at=9_900)
    assert SpendTracker.for_instance(late, created_at=9_100, fallback_price=0.3, clock=clock).started_at == 9_100


def test_projected_extrapolates_training_only():
    clock = Clock(0)
    t = SpendTracker(price_per_hour=3.6, started_at=0, clock=clock)  # $0.001 per second
    assert t.projected(0.0) is None
    clock.now = 600  # ten minutes of boot and upload
    t.mark_training_started()
    clock.now = 900  # five minutes of training: a quarter done
    assert t.projected(0.25) == pytest.approx(0.9 + 0.9)  # spent 0.9, 15 more minutes of training
    assert t.projected(0.25, tail_seconds=100) == pytest.approx(1.9)
    assert t.projected(1.0) == pytest.approx(0.9)


def test_over_stops_before_the_limit_with_a_reserve():
    clock = Clock(0)
    t = SpendTracker(price_per_hour=3.6, started_at=0, clock=clock)
    assert not t.over(None)
    clock.now = 700
    assert not t.over(1.0, reserve_seconds=120)
    clock.now = 880  # 0.88 spent + 0.12 reserve = the limit
    assert t.over(1.0, reserve_seconds=120)
    assert t.seconds_left(1.0, reserve_seconds=120) == pytest.approx(0)
    clock.now = 500
    assert t.seconds_left(1.0, reserve_seconds=120) == pytest.approx(380)
    assert SpendTracker(price_per_hour=0, started_at=0, clock=clock).seconds_left(1.0) is None


def test_lease_is_estimate_times_safety():
    e = make_estimate(total_s=3600, price=0.5)
    assert lease_seconds(e) == pytest.approx(5400)
    assert lease_seconds(e, safety_factor=2) == pytest.approx(7200)


def test_lease_capped_by_max_cost_at_the_real_price():
    e = make_estimate(total_s=3600, price=0.5)
    # $1 at the real $1/h (not the offer's $0.5/h) buys one hour.
    assert lease_seconds(e, max_cost=1.0, price=1.0) == pytest.approx(3600)
    assert lease_seconds(e, max_cost=1.0) == pytest.approx(5400)  # $1 at $0.5/h is 2 h: the estimate wins


def test_lease_has_a_floor_but_the_cost_cap_wins():
    tiny = make_estimate(total_s=30, price=0.0)
    assert lease_seconds(tiny) == 600
    dear = make_estimate(total_s=30, price=36.0)
    assert lease_seconds(dear, max_cost=1.0) == pytest.approx(100)


def test_the_cost_ceiling_refuses_above_it_and_nan(monkeypatch, tmp_path):
    import math

    from lorarun.runner.errors import BudgetError, UserInputError
    from lorarun.runner.price.budget import DEFAULT_COST_CEILING, cost_ceiling, refuse_over_budget

    monkeypatch.setenv("LORARUN_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.delenv("LORARUN_COST_CEILING", raising=False)
    assert cost_ceiling(None)[0] == DEFAULT_COST_CEILING
    refuse_over_budget(DEFAULT_COST_CEILING, None)
    for predicted in (DEFAULT_COST_CEILING + 0.01, 1.9e25, math.nan, math.inf):
        with pytest.raises(BudgetError, match="cost_ceiling"):
            refuse_over_budget(predicted, None)
    with pytest.raises(BudgetError, match="above max_cost"):
        refuse_over_budget(10.5, 10.0)
    refuse_over_budget(500.0, 1000.0)  # a job's own max_cost replaces the ceiling
    (tmp_path / "config.toml").write_text("cost_ceiling = 200.0\n")
    assert cost_ceiling(None) == (200.0, "cost_ceiling in the user config")
    refuse_over_budget(150.0, None)
    monkeypatch.setenv("LORARUN_COST_CEILING", "nan")
    with pytest.raises(UserInputError, match="LORARUN_COST_CEILING"):
        cost_ceiling(None)


def test_the_lease_is_always_finite_and_bounded():
    import math

    from lorarun.runner.price.budget import MAX_LEASE_S, bounded_lease

    assert bounded_lease(math.nan) == MAX_LEASE_S and bounded_lease(math.inf) == MAX_LEASE_S
    assert bounded_lease(1e30) == MAX_LEASE_S and bounded_lease(3600) == 3600
    import time

    time.strftime("%Y", time.gmtime(time.time() + MAX_LEASE_S))  # formattable
