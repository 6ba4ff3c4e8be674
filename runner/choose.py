"""Phase 2 for `submit`: live offers → predicted whole-job cost → the cheapest that fits → the user's yes.

Nothing is rented here; a "no" (or a budget refusal) exits with code 2 before any money is spent.
"""
from __future__ import annotations

from dataclasses import dataclass

from lorarun.provider_adapters.base import Offer, Provider, ResourceRequest

from .console import err_console, money
from .errors import BudgetError, UserInputError
from .spec import Resources
from .validate import ValidatedJob


@dataclass(frozen=True)
class OfferChoice:
    offer: Offer
    predicted_costs: list[float | None]
    alternatives: tuple[Offer, ...] = ()  # next cheapest, for when the chosen one is taken before renting


def resource_request(resources: Resources, min_vram_gb: float = 0.0) -> ResourceRequest:
    return ResourceRequest(
        gpu_names=resources.gpus, gpu_count=resources.gpu_count,
        min_vram_gb=max(resources.min_vram_gb, min_vram_gb), max_price_per_hour=resources.max_price_per_hour,
        min_reliability=resources.min_reliability, min_inet_down_mbps=resources.min_inet_down_mbps,
        disk_gb=resources.disk_gb, interruptible=resources.interruptible,
        secure_cloud_only=resources.secure_cloud_only, regions=resources.regions,
    )


def choose_offer(provider: Provider, jobs: list[ValidatedJob], *, assume_yes: bool, interactive: bool) -> OfferChoice:
    from .estimate_view import estimate_batch, print_estimate_table

    resources = jobs[0].spec.resources
    ranked = estimate_batch(provider, jobs)
    fitting = [e for e in ranked if e.fits]
    if not fitting:
        print_estimate_table(ranked, title="no offer fits this job", top=10)
        reasons = sorted({e.excluded for e in ranked if e.excluded})
        raise BudgetError(f"no {provider.name} offer fits the job"
                          + (f" ({'; '.join(reasons[:3])})" if reasons else "")
                          + "; relax resources (gpus, max_price_per_hour, max_cost) or try another provider")
    best = fitting[0]
    print_estimate_table(fitting, title=f"chosen offer on {provider.name}", top=1)
    if resources.max_cost is not None and best.total_cost > resources.max_cost:
        raise BudgetError(f"the cheapest offer is predicted at {money(best.total_cost)}, above max_cost "
                          f"{money(resources.max_cost)}; raise max_cost or shrink the job")
    if best.total_cost > 0 and not assume_yes:
        if not interactive:
            raise UserInputError("submit would rent a paid instance; pass --yes to confirm without a prompt")
        from rich.prompt import Confirm

        if not Confirm.ask(f"Rent {best.offer.gpu_name} for about {money(best.total_cost)} in total?",
                           default=False, console=err_console):
            raise BudgetError("not confirmed; nothing was rented")
    return OfferChoice(offer=best.offer, predicted_costs=best.per_job_costs,
                       alternatives=tuple(e.offer for e in fitting[1:4]))
