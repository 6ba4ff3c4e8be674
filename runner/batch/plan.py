"""The batch's estimate: each job on the cheapest fitting offer, packed onto at most N rentals (packing.py), each
rental priced as the one-rental batch it is (start-up once, a base model shared by its jobs downloaded once:
`estimate_batch_offer`). Shows the total and the wall time, refuses above `max_cost` before anything is rented
(even with --yes), and asks the user unless --yes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rich.table import Table

from lorarun.provider_adapters.base import Provider
from lorarun.runner.batch.packing import Share, pack
from lorarun.runner.console import err_console, minutes, money
from lorarun.runner.errors import BudgetError, UserInputError
from lorarun.runner.job.validate import ValidatedJob
from lorarun.runner.price.budget import lease_seconds, refuse_over_budget
from lorarun.runner.price.calibration_load import load_calibration
from lorarun.runner.price.estimate import Estimate, estimate_batch_offer, estimate_offer, rank_batch
from lorarun.runner.price.job_inputs import inputs_from_job
from lorarun.runner.price.offer_choice import no_fit_message
from lorarun.runner.price.offer_table import offer_request, print_table

# Vast.ai offers are asks on one machine (vast-cli `search offers` lists `ask_contract_id`s; `create instance ID`
# rents that ask, after which it is gone): concurrent rentals start from different offers. RunPod's offers are GPU
# types (runpodctl `create pod --gpuType`), rentable many times over: every rental starts from the cheapest.
ONE_RENTAL_PER_OFFER = frozenset({"vastai"})


@dataclass(frozen=True)
class RentalPlan:
    share: Share  # which jobs (indices into the batch), in order
    estimate: Estimate  # the share as a one-rental batch on its first offer
    ranked: tuple[Estimate, ...]  # the offers this rental tries, in order (its fallbacks)


@dataclass(frozen=True)
class BatchPlan:
    rentals: tuple[RentalPlan, ...]
    job_seconds: tuple[float, ...]  # each job alone, start-up excluded
    lease_seconds: float

    @property
    def total_cost(self) -> float:
        return sum(r.estimate.total_cost for r in self.rentals)

    @property
    def wall_seconds(self) -> float:
        return max(r.estimate.total_seconds for r in self.rentals)

    @property
    def longest_job_seconds(self) -> float:
        return max(self.job_seconds)

    def job_cost(self, index: int) -> float | None:
        """A job's share of its rental's predicted cost (the rental's start-up charged to its first job)."""
        for r in self.rentals:
            if index in r.share.jobs and len(r.estimate.per_job_costs) == len(r.share.jobs):
                return r.estimate.per_job_costs[r.share.jobs.index(index)]
            if index in r.share.jobs:
                return r.estimate.total_cost / len(r.share.jobs)
        return None


def plan_batch(provider: Provider, jobs: list[ValidatedJob], rentals: int) -> BatchPlan:
    """Offers → per-job estimates → packing → per-rental estimates. Raises BudgetError when nothing fits."""
    resources = jobs[0].spec.resources
    calibration = load_calibration()
    inputs = [inputs_from_job(j.spec, j.scan, calibration) for j in jobs]
    needs_most = max(inputs, key=lambda i: i.vram_needed_gb)
    offers = provider.offers(offer_request(resources, needs_most))
    no_cap = dataclasses.replace(resources, max_cost=None)
    # Which offers can run every job of the batch (VRAM, disk, CUDA...): the one-rental ranking, without the
    # budget (the budget applies to the fanned-out total below).
    ranked = [e for e in rank_batch(inputs, offers, calibration, no_cap) if e.fits]
    if not ranked:
        everything = rank_batch(inputs, offers, calibration, no_cap)
        print_table(f"{len(jobs)} jobs", needs_most, everything, top=10)
        raise BudgetError(f"{provider.name}: {no_fit_message(everything)}")
    best = ranked[0].offer
    singles = [estimate_offer(i, best, calibration, no_cap) for i in inputs]
    startup = max(e.phases.startup for e in singles)
    job_seconds = tuple(e.total_seconds - e.phases.startup for e in singles)
    shares = pack(list(job_seconds), rentals, startup=startup)
    plans = []
    for k, share in enumerate(shares):
        order = ranked[k:] + ranked[:k] if provider.name in ONE_RENTAL_PER_OFFER else ranked
        offer = order[0].offer
        estimate = estimate_batch_offer([inputs[i] for i in share.jobs], offer, calibration, no_cap)
        own = [estimate_batch_offer([inputs[i] for i in share.jobs], e.offer, calibration, no_cap) for e in order]
        plans.append(RentalPlan(share=share, estimate=estimate, ranked=tuple(own)))
    longest = max(plans, key=lambda r: r.estimate.total_seconds).estimate
    lease = lease_seconds(longest, max_cost=resources.max_cost, price=longest.offer.price_per_hour)
    return BatchPlan(rentals=tuple(plans), job_seconds=job_seconds, lease_seconds=lease)


def show_and_confirm(
    plan: BatchPlan, jobs: list[ValidatedJob], provider: Provider, *, assume_yes: bool, interactive: bool
) -> None:
    """The plan per rental, the total and the wall time; refuse over budget; ask unless --yes."""
    table = Table(title=f"{len(jobs)} jobs on {len(plan.rentals)} rental(s)", title_justify="left")
    for column in ("rental", "GPU", "$/h", "jobs (in order)", "≈ time", "≈ cost"):
        table.add_column(column, overflow="fold")
    for n, r in enumerate(plan.rentals, 1):
        table.add_row(
            str(n),
            r.estimate.offer.gpu_name,
            money(r.estimate.offer.price_per_hour),
            ", ".join(jobs[i].spec.name for i in r.share.jobs),
            minutes(r.estimate.total_seconds),
            money(r.estimate.total_cost),
        )
    err_console.print(table)
    max_cost = jobs[0].spec.resources.max_cost
    err_console.print(
        f"plan: {len(plan.rentals)} rental(s) side by side on {provider.name}, wall ≈ "
        f"[bold]{minutes(plan.wall_seconds)}[/] (longest job ≈ {minutes(plan.longest_job_seconds)}), "
        f"≈ [bold]{money(plan.total_cost)}[/] in total"
        + (f" (max_cost {money(max_cost)} for the whole batch)" if max_cost is not None else ""),
        highlight=False,
    )
    refuse_over_budget(plan.total_cost, max_cost)  # the whole batch's total, before any rental
    if assume_yes:
        return
    paid = plan.total_cost > 0
    if not interactive:
        raise UserInputError(
            f"submit would rent {len(plan.rentals)} instance(s); it asks first: pass --yes to go ahead without a prompt"
        )
    from rich.prompt import Confirm

    question = (
        f"Rent {len(plan.rentals)} instance(s) for about {money(plan.total_cost)} in total?"
        if paid
        else f"Start {len(jobs)} jobs on {provider.name} ({len(plan.rentals)} side by side)?"
    )
    if not Confirm.ask(question, default=False, console=err_console):
        raise BudgetError("not confirmed; nothing was " + ("rented" if paid else "started"))
