"""Phase 2 for `submit`: live offers → predicted whole-job cost (`estimate.py`) → the cheapest that fits → the
user's yes. Nothing is rented here; a "no" or a budget refusal exits with code 2 before any money is spent."""

from __future__ import annotations

from dataclasses import dataclass

from lorarun.provider_adapters.base import Provider
from lorarun.runner.console import err_console, minutes, money
from lorarun.runner.errors import BudgetError, UserInputError
from lorarun.runner.job.validate import ValidatedJob
from lorarun.runner.price import interruptible
from lorarun.runner.price.budget import lease_seconds, refuse_over_budget
from lorarun.runner.price.calibration_load import load_calibration
from lorarun.runner.price.estimate import Estimate, rank_batch
from lorarun.runner.price.job_inputs import inputs_from_job
from lorarun.runner.price.offer_choice import no_fit_message
from lorarun.runner.price.offer_table import print_table


@dataclass(frozen=True)
class OfferChoice:
    ranked: tuple[Estimate, ...]  # fitting estimates, cheapest first: the pipeline falls back along them
    lease_seconds: float

    @property
    def best(self) -> Estimate:
        return self.ranked[0]


def _ranked(provider: Provider, jobs: list[ValidatedJob]):
    resources = jobs[0].spec.resources
    calibration = load_calibration()
    inputs = [inputs_from_job(j.spec, j.scan, calibration) for j in jobs]
    needs_most = max(inputs, key=lambda i: i.vram_needed_gb)
    offers = interruptible.fetch_offers(provider, resources, needs_most)
    ranked = rank_batch(inputs, offers, calibration, resources)
    return interruptible.apply(ranked, resources, min(interruptible.save_interval_steps(j) for j in jobs)), needs_most


def rank_offers(provider: Provider, jobs: list[ValidatedJob]) -> list[Estimate]:
    """The fitting estimates, ranked as `choose_offer` ranks them, without a table or a question: a job resumed by
    `attach` after an interruption rents by the ranking its submission agreed to (runner/run/detached_resume.py)."""
    return [e for e in _ranked(provider, jobs)[0] if e.fits]


def choose_offer(provider: Provider, jobs: list[ValidatedJob], *, assume_yes: bool, interactive: bool) -> OfferChoice:
    resources = jobs[0].spec.resources
    ranked, needs_most = _ranked(provider, jobs)
    fitting = [e for e in ranked if e.fits]
    if not fitting:
        print_table(jobs[0].spec.name, needs_most, ranked, top=10, resources=resources)
        raise BudgetError(f"{provider.name}: {no_fit_message(ranked)}")
    best = fitting[0]
    print_table(
        jobs[0].spec.name if len(jobs) == 1 else f"{len(jobs)} jobs on one rental",
        needs_most,
        fitting,
        top=3,
        resources=resources,
    )
    err_console.print(
        f"plan: [bold]{best.offer.gpu_name}[/] on {provider.name} at {money(best.offer.price_per_hour)}/h,"
        f" ≈ {minutes(best.total_seconds)}, ≈ [bold]{money(best.total_cost)}[/] in total"
        + (f" (max_cost {money(resources.max_cost)})" if resources.max_cost is not None else ""),
        highlight=False,
    )
    refuse_over_budget(best.total_cost, resources.max_cost)  # above max_cost or the ceiling: no, even with --yes
    if not assume_yes:  # every submit asks, a free local run too: the plan is the user's to accept
        paid = best.total_cost > 0
        if not interactive:
            raise UserInputError(
                ("submit would rent a paid instance" if paid else f"submit would start training on {provider.name}")
                + "; it asks first: pass --yes to go ahead without a prompt"
            )
        from rich.prompt import Confirm

        question = (
            f"Rent it for about {money(best.total_cost)}?"
            if paid
            else f"Start it on {best.offer.gpu_name or provider.name} ({provider.name}, no charge)?"
        )
        if not Confirm.ask(question, default=False, console=err_console):
            raise BudgetError("not confirmed; nothing was " + ("rented" if paid else "started"))
    lease = lease_seconds(best, max_cost=resources.max_cost, price=best.offer.price_per_hour)
    return OfferChoice(ranked=tuple(fitting), lease_seconds=lease)
