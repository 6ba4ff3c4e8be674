"""Money during a run: what has been spent, what the run will cost at this pace, and the agent's lease.

Spend is computed from the instance's real price and its running time (never from the estimate), so a job that
runs slower than predicted is still stopped at the user's limit. The clock is injected: tests drive time.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lorarun.image.ranges import LEASE_SECONDS
from lorarun.provider_adapters.base import Instance
from lorarun.runner.errors import BudgetError, UserInputError
from lorarun.runner.price.estimate import Estimate

# Time kept in hand when deciding to stop at the limit: pulling the last checkpoint and destroying the instance
# still bills, so the stop starts this early (at the instance's price) rather than at the limit itself.
DEFAULT_STOP_RESERVE_S = 120.0
MIN_LEASE_S = 600.0  # even a tiny job gets ten minutes: boot jitter must not make the agent kill a healthy run
MAX_LEASE_S = LEASE_SECONDS.high  # the agent's deadline is always a finite, formattable time a few days out

# A job without max_cost is still refused above this predicted total (even with --yes): a typo such as
# `epochs: 10000` must not rent a machine for days. Raise it with `cost_ceiling` in the user config
# (runner/job/user_config.py) or LORARUN_COST_CEILING, or give the job a max_cost.
DEFAULT_COST_CEILING = 50.0
COST_CEILING_ENV = "LORARUN_COST_CEILING"


@dataclass
class SpendTracker:
    """Spend so far on one instance. `started_at` is when billing began (the provider's start time if it gives
    one, else when `create()` returned), in the clock's timescale."""

    price_per_hour: float
    started_at: float
    clock: Callable[[], float] = time.time
    storage_per_hour: float = 0.0  # storage billed on top of the price, in $/h
    training_started_at: float | None = field(default=None)

    @classmethod
    def for_instance(
        cls,
        instance: Instance,
        *,
        created_at: float,
        fallback_price: float,
        clock: Callable[[], float] = time.time,
        storage_per_hour: float = 0.0,
    ) -> SpendTracker:
        """From the instance as the provider reports it; the offer's price only if the instance has none."""
        price = instance.price_per_hour if instance.price_per_hour is not None else fallback_price
        start = instance.started_at if instance.started_at is not None else created_at
        # A provider clock ahead of ours must not hide spend: billing started no later than create() returned.
        return cls(
            price_per_hour=price, started_at=min(start, created_at), clock=clock, storage_per_hour=storage_per_hour
        )

    def elapsed(self) -> float:
        return max(0.0, self.clock() - self.started_at)

    def spent(self) -> float:
        return (self.price_per_hour + self.storage_per_hour) * self.elapsed() / 3600

    def mark_training_started(self, at: float | None = None) -> None:
        """Call when the engine reports its first step, so projections extrapolate training time only."""
        self.training_started_at = self.clock() if at is None else at

    def projected(self, progress_fraction: float, tail_seconds: float = 0.0) -> float | None:
        """Total cost if training goes on at its pace so far; `tail_seconds` covers what follows training
        (sampling, download, teardown). None until there is progress to extrapolate from."""
        if progress_fraction <= 0:
            return None
        fraction = min(progress_fraction, 1.0)
        train_start = self.training_started_at if self.training_started_at is not None else self.started_at
        trained = max(0.0, self.clock() - train_start)
        remaining = trained * (1 - fraction) / fraction + tail_seconds
        return self.spent() + (self.price_per_hour + self.storage_per_hour) * remaining / 3600

    def over(self, max_cost: float | None, reserve_seconds: float = DEFAULT_STOP_RESERVE_S) -> bool:
        """True when the job must stop now to end within `max_cost` (None = no limit)."""
        if max_cost is None:
            return False
        reserve = (self.price_per_hour + self.storage_per_hour) * reserve_seconds / 3600
        return self.spent() + reserve >= max_cost

    def seconds_left(self, max_cost: float | None, reserve_seconds: float = DEFAULT_STOP_RESERVE_S) -> float | None:
        """Seconds until `over()` becomes true; None without a limit or on a free machine."""
        rate = self.price_per_hour + self.storage_per_hour
        if max_cost is None or rate <= 0:
            return None
        return max(0.0, (max_cost - self.spent()) * 3600 / rate - reserve_seconds)


def cost_ceiling(max_cost: float | None) -> tuple[float, str]:
    """The most a job may be predicted to cost, and where that limit comes from (for the message)."""
    if max_cost is not None:
        return max_cost, "max_cost"
    raw: object = os.environ.get(COST_CEILING_ENV)  # text from the environment, anything from the config file
    where = COST_CEILING_ENV
    if raw is None:
        raw, where = _user_config_ceiling(), "cost_ceiling in the user config"
    if raw is None:
        return DEFAULT_COST_CEILING, "the default ceiling for jobs without max_cost"
    try:
        value = float(str(raw))  # `true` in the config is not 1 dollar: refused below like any non-number
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserInputError(f"{where}: {raw!r} is not a positive number of dollars")
    return value, where


def _user_config_ceiling() -> object | None:
    from lorarun.runner.job import user_config  # `lorarun config set cost_ceiling 200`

    return user_config.load().get("cost_ceiling")


def refuse_over_budget(predicted: float, max_cost: float | None) -> None:
    """Raise `BudgetError` (exit 2, before renting, even with --yes) when the predicted total is above the job's
    max_cost or, without one, above the ceiling. Written so that a NaN prediction is refused too."""
    limit, where = cost_ceiling(max_cost)
    if predicted <= limit:
        return
    shown = f"${predicted:,.2f}" if math.isfinite(predicted) else str(predicted)
    fix = (
        "raise max_cost (job file or --max-cost) or make the job smaller"
        if where == "max_cost"
        else "set resources.max_cost (or --max-cost) to at least that, raise the ceiling with `lorarun config set "
        "cost_ceiling N`, or make the job smaller"
    )
    raise BudgetError(f"predicted total {shown} is above {where} (${limit:,.2f}); nothing was rented; {fix}")


def bounded_lease(seconds: float) -> float:
    """A lease the agent can hold: finite, at least a minute, at most MAX_LEASE_S (NaN → the maximum)."""
    if not math.isfinite(seconds) or seconds > MAX_LEASE_S:
        return MAX_LEASE_S
    return max(seconds, LEASE_SECONDS.low)


def lease_seconds(
    estimate: Estimate,
    safety_factor: float = 1.5,
    max_cost: float | None = None,
    price: float | None = None,
    minimum: float = MIN_LEASE_S,
) -> float:
    """How long the on-instance agent may run before it stops and destroys its own machine.

    The estimate × a safety factor (estimates are off by up to ~1.6× run to run, baselines.md), never less than
    `minimum`, and capped so that the machine cannot outlive the job's max cost at its real price per hour.
    """
    lease = max(estimate.total_seconds * safety_factor, minimum)
    rate = price if price is not None else estimate.offer.price_per_hour
    if max_cost is not None and rate and rate > 0:
        lease = min(lease, max_cost / rate * 3600)
    return bounded_lease(lease)
