"""Interruptible rentals, the pure parts: the setting, the bid, the expected cost and its learned rate, the ranking,
and what counts as an interruption."""

from __future__ import annotations

import dataclasses

import pytest

from lorarun.image.engine_config import TrainingConfig
from lorarun.image.schema import ConfigError
from lorarun.provider_adapters.base import Instance, InstanceStatus, Offer
from lorarun.runner.job.spec import Resources
from lorarun.runner.price import interruptible
from lorarun.runner.price.estimate import Estimate, Phases
from lorarun.runner.run.interruption import CHECK_INTERVAL_S, DETECT_WITHIN_S, interruption_reason


# -- the setting ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "mode"),
    [(True, "allowed"), (False, "never"), ("prefer", "prefer"), ("Allowed", "allowed"), ("yes", "allowed")],
)
def test_interruptible_reads_modes_and_the_older_booleans(given, mode):
    assert Resources(interruptible=given).interruptible == mode
    Resources(interruptible=given).validate()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("interruptible", "sometimes", "never, allowed, prefer"),
        ("max_bid_per_hour", 0.0, "max_bid_per_hour"),
        ("bid_margin", -0.1, "bid_margin"),
        ("max_interruptions", -1, "max_interruptions"),
    ],
)
def test_bad_interruptible_settings_are_one_clear_line(field, value, message):
    with pytest.raises(ConfigError, match=message):
        Resources(**{field: value}).validate()


def test_the_job_file_and_the_user_config_set_it(tmp_path, monkeypatch):
    from lorarun.runner.job import user_config
    from lorarun.runner.job.load import load_job

    monkeypatch.setenv("LORARUN_CONFIG", str(tmp_path / "config.toml"))
    assert user_config.set_value("interruptible", "prefer") == "prefer"
    with pytest.raises(Exception, match="never, allowed, prefer"):
        user_config.set_value("interruptible", "maybe")
    toml = tmp_path / "job.toml"
    toml.write_text(
        'pretrained_model_name_or_path = "builtin:tiny-sd15"\ntrain_data_dir = "data"\n'
        '[lorarun]\ninterruptible = "allowed"\nmax_interruptions = 2\nmax_bid_per_hour = 0.3\n',
        encoding="utf-8",
    )
    spec = load_job(toml)
    assert spec.resources.interruptible == "allowed"
    assert spec.resources.max_interruptions == 2 and spec.resources.max_bid_per_hour == 0.3
    assert user_config.inherit(spec).resources.interruptible == "allowed"  # the job's own setting wins


# -- the bid -------------------------------------------------------------------------------------------------------
def test_the_bid_is_the_floor_plus_the_margin_capped_by_the_maximum():
    assert interruptible.bid_price(0.20, Resources(bid_margin=0.1)) == 0.22
    assert interruptible.bid_price(0.20, Resources(bid_margin=0.1, max_bid_per_hour=0.21)) == 0.21
    assert interruptible.bid_price(0.25, Resources(max_bid_per_hour=0.21)) is None  # the floor is over the cap


class _Market:
    name = "vastai"

    def __init__(self):
        self.requests = []

    def offers(self, req):
        self.requests.append(req)
        base = Offer("vastai", "1", "RTX 4090", 1, 24.0, 0.40, machine="m1")
        return [dataclasses.replace(base, price_per_hour=0.15, interruptible=True)] if req.interruptible else [base]


def test_both_markets_are_fetched_only_when_the_job_allows_interruptible():
    market = _Market()
    inputs = type("I", (), {"vram_needed_gb": 8.0})()
    assert [o.price_per_hour for o in interruptible.fetch_offers(market, Resources(), inputs)] == [0.40]
    offers = interruptible.fetch_offers(market, Resources(interruptible="allowed", bid_margin=0.2), inputs)
    assert [(o.interruptible, o.price_per_hour) for o in offers] == [(False, 0.40), (True, 0.18)]
    assert [r.interruptible for r in market.requests] == [False, False, True]


# -- the expected cost ---------------------------------------------------------------------------------------------
def _estimate(price: float, *, spot: bool, train_s: float = 3000.0) -> Estimate:
    offer = Offer("vastai", f"{price}", "RTX 4090", 1, 24.0, price, interruptible=spot)
    phases = Phases(
        boot=120, image_pull=180, model_download=60, upload=30, prepare=90, train=train_s, sampling=20, download=10
    )
    return Estimate(
        offer=offer,
        phases=phases,
        seconds_per_step=1.2,
        step_source="shipped",
        step_kind="shipped",
        boot_source="shipped",
        compute_cost=price * phases.total / 3600,
        storage_cost=0.0,
        vram_needed_gb=8.0,
    )


def test_the_expected_cost_adds_re_rents_and_half_a_save_interval_per_expected_interruption():
    e = _estimate(0.20, spot=True)
    rate = interruptible.InterruptionRate(0.5, "assumed")
    risky = interruptible.with_risk(e, rate, save_interval=500)
    hours = e.total_seconds / 3600
    restart_s = 120 + 180 + 60 + 30 + 90 + 500 * 1.2 / 2
    assert risky.expected_extra_cost == pytest.approx(0.5 * hours * restart_s / 3600 * 0.20, rel=1e-4)
    assert risky.expected_cost == pytest.approx(e.total_cost + risky.expected_extra_cost)
    data = risky.to_dict()
    assert data["expected_total_cost"] > data["total_cost"] and data["interruption_rate_per_hour"] == 0.5
    on_demand = _estimate(0.40, spot=False)
    assert interruptible.with_risk(on_demand, rate, 500) is on_demand  # nothing to expect on demand


def test_ranking_by_expected_total_and_prefer_puts_interruptible_first():
    cheap_risky = dataclasses.replace(_estimate(0.20, spot=True), expected_extra_cost=10.0)
    steady = _estimate(0.40, spot=False)
    assert interruptible.rerank([cheap_risky, steady], "allowed")[0] is steady  # expected total decides
    assert interruptible.rerank([steady, cheap_risky], "prefer")[0] is cheap_risky


def test_the_rate_is_assumed_then_learned_from_the_users_own_rentals(tmp_path):
    path = tmp_path / "interruptions.json"
    first = interruptible.rate_for("vastai", path)
    assert first.per_hour == interruptible.PRIOR_RATE_PER_HOUR["vastai"] and "assumed" in first.source
    for _ in range(20):
        interruptible.record_rental("vastai", 2.0, interrupted=False, path=path)
    calm = interruptible.rate_for("vastai", path)
    assert calm.per_hour < first.per_hour and "0 interruption(s) in 40.0 h" in calm.source
    for _ in range(10):
        interruptible.record_rental("vastai", 0.5, interrupted=True, path=path)
    assert interruptible.rate_for("vastai", path).per_hour > calm.per_hour
    assert interruptible.rate_for("runpod", path).per_hour == interruptible.PRIOR_RATE_PER_HOUR["runpod"]


# -- what an interruption is ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "interrupted"),
    [
        (InstanceStatus.RUNNING, False),
        (InstanceStatus.PENDING, False),
        (InstanceStatus.STOPPED, True),
        (InstanceStatus.TERMINATED, True),
    ],
)
def test_stopped_or_gone_is_an_interruption_running_is_not(status, interrupted):
    instance = Instance("vastai", "1", "lorarun-x", status, status_message="Instance stopped: outbid")
    assert (interruption_reason(instance) is not None) is interrupted
    assert interruption_reason(None) == "gone at the provider"


def test_the_provider_is_asked_often_enough_to_notice_within_a_minute():
    # The monitor asks every CHECK_INTERVAL_S (and at once when the link drops); Vast allows one show-instance call
    # per 2 s (x-rate-limit 2.0, providers.md §1.4) and its docs poll every 10 s.
    assert 10.0 <= CHECK_INTERVAL_S <= DETECT_WITHIN_S / 2


# -- save_every_n_steps bounds the lost work ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("epochs_every", "steps_every", "interval"),
    [(None, None, 400), (2, None, 80), (2, 25, 25), (1, 100, 40), (None, 30, 30), (None, 1000, 400)],
)
def test_the_save_interval_is_the_closer_of_epoch_and_step_saves(epochs_every, steps_every, interval):
    training = dataclasses.replace(TrainingConfig(), save_every_n_epochs=epochs_every, save_every_n_steps=steps_every)
    job = _Validated(spec=_Spec(training=training), steps_per_epoch=40, total_steps=400)
    assert interruptible.save_interval_steps(job) == interval


def test_saving_every_n_steps_lowers_the_expected_cost_of_an_interruption():
    e = _estimate(0.20, spot=True)
    rate = interruptible.InterruptionRate(0.5, "assumed")
    epochs_only = interruptible.with_risk(e, rate, save_interval=80).expected_extra_cost
    with_steps = interruptible.with_risk(e, rate, save_interval=25).expected_extra_cost
    # Half a save interval lost per interruption: 27.5 steps × 1.2 s fewer, at the expected interruptions
    assert epochs_only - with_steps == pytest.approx(
        0.5 * e.total_seconds / 3600 * (80 - 25) * 1.2 / 2 / 3600 * 0.2, rel=1e-2
    )


@dataclasses.dataclass(frozen=True)
class _Spec:
    training: TrainingConfig


@dataclasses.dataclass(frozen=True)
class _Validated:
    spec: _Spec
    steps_per_epoch: int
    total_steps: int
