"""Estimates for a batch of jobs on one provider's live offers, and the table that shows them."""
from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from lorarun.provider_adapters.base import Offer, Provider

from .console import err_console, minutes, money
from .validate import ValidatedJob


@dataclass(frozen=True)
class BatchEstimate:
    offer: Offer
    total_cost: float
    total_seconds: float
    per_job_costs: list[float | None]
    excluded: str | None = None

    @property
    def fits(self) -> bool:
        return self.excluded is None


def estimate_batch(provider: Provider, jobs: list[ValidatedJob]) -> list[BatchEstimate]:
    from .choose import resource_request

    offers = provider.offers(resource_request(jobs[0].spec.resources))
    estimates = [BatchEstimate(offer=o, total_cost=0.0, total_seconds=0.0, per_job_costs=[0.0] * len(jobs))
                 for o in offers]
    return sorted(estimates, key=lambda e: (not e.fits, e.total_cost))


def print_estimate_table(estimates: list[BatchEstimate], *, title: str, top: int) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("provider", "GPU", "VRAM", "$/h", "time", "total", "note"):
        table.add_column(column)
    for e in estimates[:top]:
        o = e.offer
        gpu = f"{o.gpu_count}× {o.gpu_name}" if o.gpu_count > 1 else o.gpu_name
        table.add_row(o.provider, gpu, f"{o.vram_gb:.0f} GB" if o.vram_gb else "-", money(o.price_per_hour),
                      minutes(e.total_seconds), money(e.total_cost), e.excluded or "")
    err_console.print(table)
