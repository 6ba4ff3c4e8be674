"""Interruptible offers and what an interruption is expected to cost.

Both markets sell the same machines cheaper when the provider may take them back: Vast.ai bids (`type: bid` offers
with a `min_bid`; the create carries `price`, vast-ai/vast-cli `create instance --price`, dstackai/dstack
`backends/vastai/compute.py::run_job`; providers.md §1.2-§1.3) and RunPod spot pods (`lowestPrice.minimumBidPrice`,
created with GraphQL `podRentInterruptable(input: {…, bidPerGpu})`, dstackai/dstack
`backends/runpod/api_client.py::generate_pod_deployment_mutation`; providers.md §2.3). lorarun resumes an
interrupted job on a new rental from the last checkpoint that is home (runner/run/interruption.py), so what an
interruption costs is the re-rent (boot, upload, caching again) and the work since the last save — never the run.

    expected total = total at the bid price + rate/h × hours × (restart time + half a save interval) × price

The rate is stated with its source: a prior per provider (no public figure exists; a guess that errs high), blended
with the user's own interruptible hours once they have some (`~/.lorarun/interruptions.json`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from lorarun.provider_adapters.base import Offer, Provider
from lorarun.provider_adapters.user_files import lorarun_home
from lorarun.runner.job.spec import Resources
from lorarun.runner.price.estimate import Estimate, EstimateInputs
from lorarun.runner.price.offer_table import offer_request

MARKETS = ("vastai", "runpod")  # providers with an interruptible market
# Interruptions per rented hour assumed before the user has history. Neither provider publishes one; Vast's FAQ
# only says bids are stopped when outbid and RunPod removed spot from its docs (providers.md §1.8, §2.8). Erring
# high keeps the expected cost honest.
PRIOR_RATE_PER_HOUR = {"vastai": 0.15, "runpod": 0.15}
PRIOR_HOURS = 10.0  # how much weight the prior keeps against the user's own hours
HISTORY_FILE = "interruptions.json"


@dataclass(frozen=True)
class InterruptionRate:
    per_hour: float
    source: str  # "assumed …" or "your jobs: k interruptions in h hours …"


def bid_price(min_bid: float, resources: Resources) -> float | None:
    """What lorarun bids for a machine whose floor is `min_bid`: the margin above it, capped by the user's maximum;
    None when even the floor is above that maximum."""
    cap = resources.max_bid_per_hour
    if cap is not None and min_bid > cap:
        return None
    bid = min_bid * (1.0 + resources.bid_margin)
    return round(min(bid, cap) if cap is not None else bid, 4)


def fetch_offers(
    provider: Provider, resources: Resources, inputs: EstimateInputs, *, always: bool = False
) -> list[Offer]:
    """On-demand offers and, when the job allows interruptible machines, the interruptible ones at lorarun's bid
    (both markets are shown side by side). Adapters answer an interruptible search with the floor (Vast `min_bid`,
    RunPod `minimumBidPrice`) in `price_per_hour`; the bid replaces it here."""
    offers = list(provider.offers(offer_request(resources, inputs)))
    if (resources.interruptible == "never" and not always) or provider.name not in MARKETS:
        return offers
    for offer in provider.offers(offer_request(resources, inputs, interruptible=True)):
        if not offer.interruptible:
            continue  # an adapter without a spot market answered with on-demand offers: already listed
        bid = bid_price(offer.price_per_hour, resources)
        if bid is not None:
            offers.append(dataclasses.replace(offer, price_per_hour=bid))
    return offers


# -- the rate, learned --------------------------------------------------------------------------------------------
def history_path() -> Path:
    return lorarun_home() / HISTORY_FILE


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_rental(provider: str, hours: float, interrupted: bool, path: Path | None = None) -> None:
    """One interruptible rental ended: its hours and whether the provider took it back."""
    path = path or history_path()
    data = _read(path)
    known = data.get(provider)
    row = known if isinstance(known, dict) else {}
    row = {
        "hours": float(row.get("hours") or 0.0) + max(0.0, hours),
        "interruptions": int(row.get("interruptions") or 0) + (1 if interrupted else 0),
        "rentals": int(row.get("rentals") or 0) + 1,
    }
    data[provider] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def rate_for(provider: str, path: Path | None = None) -> InterruptionRate:
    prior = PRIOR_RATE_PER_HOUR.get(provider, 0.15)
    row = _read(path or history_path()).get(provider)
    if not isinstance(row, dict) or not row.get("hours"):
        return InterruptionRate(prior, f"assumed {prior:g}/h (no interruptible job of yours on {provider} yet)")
    hours, count = float(row["hours"]), int(row.get("interruptions") or 0)
    rate = (count + prior * PRIOR_HOURS) / (hours + PRIOR_HOURS)
    return InterruptionRate(
        round(rate, 4), f"{rate:.2f}/h: your jobs on {provider}, {count} interruption(s) in {hours:.1f} h"
    )


# -- the expected cost --------------------------------------------------------------------------------------------
def save_interval_steps(job) -> int:
    """Steps between two resume points of a validated job: the closer of a checkpoint every N epochs and
    `training.save_every_n_steps`, else only the final one. At worst an interruption loses this many steps."""
    t = job.spec.training
    intervals = [job.total_steps]
    if t.save_every_n_epochs and job.steps_per_epoch:
        intervals.append(job.steps_per_epoch * t.save_every_n_epochs)
    if t.save_every_n_steps:
        intervals.append(t.save_every_n_steps)
    return max(1, min(intervals))


def with_risk(estimate: Estimate, rate: InterruptionRate, save_interval: int) -> Estimate:
    """`estimate` with its expected interruption cost (interruptible offers only)."""
    if not estimate.offer.interruptible:
        return estimate
    p = estimate.phases
    hours = estimate.total_seconds / 3600.0
    expected = rate.per_hour * hours
    # One interruption costs a new start (boot, pull, model, upload, caching) and on average half a save interval.
    restart_s = p.startup + p.upload + p.prepare + save_interval * estimate.seconds_per_step / 2.0
    extra = expected * restart_s / 3600.0 * estimate.offer.price_per_hour
    return dataclasses.replace(
        estimate, expected_extra_cost=round(extra, 6), interruption_rate=rate.per_hour, interruption_source=rate.source
    )


def rerank(ranked: list[Estimate], mode: str) -> list[Estimate]:
    """Fitting first; `prefer` puts interruptible offers ahead, otherwise the cheapest expected total wins."""

    def key(e: Estimate):
        preferred = 0 if (mode != "prefer" or e.offer.interruptible) else 1
        return (not e.fits, preferred, round(e.expected_cost, 6), e.total_seconds, e.offer.id)

    return sorted(ranked, key=key)


def apply(ranked: list[Estimate], resources: Resources, save_interval: int, *, always: bool = False) -> list[Estimate]:
    """The ranking `submit` and `estimate` use: each interruptible offer with its risk, then reranked. `always`:
    the estimate command prices interruptible rows even for a job that excludes them (to compare)."""
    if resources.interruptible == "never" and not always:
        return ranked
    rates: dict[str, InterruptionRate] = {}
    out = []
    for e in ranked:
        if e.offer.interruptible and e.offer.provider not in rates:
            rates[e.offer.provider] = rate_for(e.offer.provider)
        out.append(with_risk(e, rates[e.offer.provider], save_interval) if e.offer.interruptible else e)
    return rerank(out, resources.interruptible)
