"""Rent the cheapest offer that fits, moving down the ranking when an offer is taken before it can be rented.

Marketplace offers are live: between `offers()` and `create()` another renter may take the machine (Vast
`no_such_ask`), or the provider may have no capacity left. Those are normal and cost nothing, so the next offer
is tried. A failed create that still produced an instance id (Vast's `new_contract` on a failed bid) may be
billing: the id goes to `on_instance_id` at once, so the caller records and destroys it, and the next offer is
tried. Every other error (bad key, no credit, rate limit after retries) is the user's to see: it propagates.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from lorarun.provider_adapters.base import Instance, InstanceSpec, Provider
from lorarun.provider_adapters.errors import CreateFailed, NoCapacityError, OfferGoneError
from lorarun.runner.errors import BudgetError
from lorarun.runner.price.estimate import Estimate

DEFAULT_MAX_ATTEMPTS = 5  # Vast allows ~4.5 creates in its rate window; five misses in a row means "try later"


def create_cheapest(
    provider: Provider,
    ranked_estimates: list[Estimate],
    make_spec: Callable[[Estimate], InstanceSpec],
    on_instance_id: Callable[[str], None],
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> tuple[Estimate, Instance]:
    """Create an instance from the first fitting estimate that can be rented; returns it with its estimate.

    `ranked_estimates` is `estimate.rank(...)`'s output (for this provider); `make_spec(estimate)` builds the
    InstanceSpec (it may depend on the offer, e.g. a bid price). Raises `BudgetError` when no offer fits (with the
    reasons) and `NoCapacityError` when every fitting offer tried was gone.
    """
    mine = [e for e in ranked_estimates if e.offer.provider == provider.name]
    fitting = [e for e in mine if e.fits]
    if not fitting:
        raise BudgetError(
            no_fit_message(mine)
            if mine or not ranked_estimates
            else f"no offer from {provider.name} among the {len(ranked_estimates)} estimated"
        )
    misses: list[str] = []
    for estimate in fitting[:max_attempts]:
        try:
            return estimate, provider.create(estimate.offer, make_spec(estimate))
        except (OfferGoneError, NoCapacityError) as err:
            misses.append(f"{_label(estimate)}: {err}")
        except CreateFailed as err:
            on_instance_id(err.instance_id)
            misses.append(
                f"{_label(estimate)}: create failed ({err}); instance {err.instance_id} handed over for destruction"
            )
    more = len(fitting) - max_attempts
    tail = f" ({more} more fitting offer(s) not tried; run again in a minute)" if more > 0 else ""
    raise NoCapacityError(
        f"none of the {len(misses)} cheapest fitting offers could be rented{tail}: " + "; ".join(misses),
        provider=provider.name,
    )


def no_fit_message(ranked_estimates: list[Estimate]) -> str:
    """One line: how many offers there were and the commonest reasons they were excluded."""
    if not ranked_estimates:
        return "no offers matched the job's filters; widen gpus, max_price_per_hour or regions"
    reasons: Counter[str] = Counter()
    for e in ranked_estimates:
        for reason in (e.excluded or "").split("; "):
            if reason:
                reasons[_reason_kind(reason)] += 1
    top = ", ".join(f"{kind} ({n})" for kind, n in reasons.most_common(4))
    cheapest = min(ranked_estimates, key=lambda e: e.total_cost)
    return (
        f"none of {len(ranked_estimates)} offer(s) fits this job: {top}; the cheapest predicted total was "
        f"${cheapest.total_cost:.2f} on {_label(cheapest)} ({cheapest.excluded})"
    )


def _reason_kind(reason: str) -> str:
    # Reasons carry numbers and details in parentheses; group them by their wording alone.
    return re.sub(r"\d+(\.\d+)?", "N", reason.split(" (")[0])


def _label(e: Estimate) -> str:
    o = e.offer
    count = f"{o.gpu_count}× " if o.gpu_count > 1 else ""
    return f"{o.provider} offer {o.id} ({count}{o.gpu_name}, ${o.price_per_hour:.3f}/h)"
