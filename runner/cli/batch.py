"""`lorarun sweep SWEEP.yaml` and `lorarun submit JOB... --rentals N`: many LoRAs at once over several rentals
(runner/batch/). Validation and the whole batch's estimate come first; nothing is rented before the user's yes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lorarun.runner.cli.flags import check_flags, hard_lease_seconds
from lorarun.runner.cli.validate import print_summary
from lorarun.runner.console import err_console
from lorarun.runner.errors import UserInputError
from lorarun.runner.state import JobStore

if TYPE_CHECKING:
    from lorarun.runner.job.validate import ValidatedJob

# The controller is imported inside the commands: `lorarun --help` imports this module to list the command.

MAX_RENTALS = 16


def register(app: typer.Typer) -> None:
    app.command("sweep", help="Train every variant of a sweep (a grid or list of overrides) over several rentals.")(
        sweep
    )


def sweep(
    sweep_file: Path = typer.Argument(..., help="A job file with a sweep: section, or base: + grid:/variants:."),
    rentals: int = typer.Option(None, "--rentals", "-n", help="At most this many rentals side by side."),
    provider: str = typer.Option(None, "--provider", "-p", help="local, ssh, vastai or runpod (overrides the job)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before renting."),
    max_cost: float = typer.Option(None, "--max-cost", help="The whole sweep's budget in dollars."),
    grace_seconds: float = typer.Option(900.0, "--grace-seconds", hidden=True),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier run's files of the same output.name (else: refused)."
    ),
) -> None:
    from lorarun.runner.batch.sweep import load_sweep
    from lorarun.runner.job.validate import validate_job

    check_flags(lease_seconds=None, grace_seconds=grace_seconds)
    loaded = load_sweep(sweep_file)
    count = rentals or loaded.rentals or min(len(loaded.variants), 3)
    err_console.print(f"sweep {sweep_file.name}: {len(loaded.variants)} variant(s)", highlight=False)
    jobs = [validate_job(p, provider=provider, max_cost=max_cost, check_credentials=True) for p in loaded.job_files]
    from lorarun.runner.job.output_guard import claimed_outputs

    with claimed_outputs(jobs, command="sweep", overwrite=overwrite) as claimed:  # each variant's outputs its own (#24)
        run_batch(
            list(claimed.jobs),
            rentals=count,
            yes=yes,
            grace_seconds=grace_seconds,
            sweep=str(loaded.source),
            claimed=claimed,
        )


def run_batch(
    jobs: list[ValidatedJob],
    *,
    rentals: int,
    yes: bool,
    keep: bool = False,
    lease_seconds: float | None = None,
    hard_lease_minutes: float | None = None,
    grace_seconds: float = 900.0,
    sweep: str | None = None,
    claimed=None,
) -> None:
    """`claimed`: the jobs' output claims (runner/job/output_guard.py), told the job ids once their states exist."""
    from lorarun.runner.batch.fanout import BatchRun
    from lorarun.runner.batch.foreground import conclude, follow
    from lorarun.runner.batch.plan import plan_batch, show_and_confirm
    from lorarun.runner.run.connect import connect_transport, make_provider
    from lorarun.runner.run.pipeline import PipelineOptions

    if not 1 <= rentals <= MAX_RENTALS:
        raise UserInputError(f"--rentals: {rentals} is outside 1..{MAX_RENTALS}")
    if keep:
        raise UserInputError("--keep applies to one rental; a batch destroys every instance it rents")
    providers = {j.spec.resources.provider for j in jobs}
    if len(providers) != 1 or not next(iter(providers)):
        raise UserInputError("a batch must use one provider: set resources.provider in the jobs or pass --provider")
    outputs: dict[tuple[Path, str], str] = {}
    for job in jobs:  # two jobs writing one file would lose one LoRA (and fight over the output claim)
        key = (job.spec.output_dir, job.spec.output.name)
        if key in outputs:
            raise UserInputError(
                f"{job.spec.source} and {outputs[key]} both write {key[0] / key[1]}.safetensors; "
                f"give each job its own output.dir or output.name"
            )
        outputs[key] = job.spec.source
    names = [j.spec.name for j in jobs]
    if len(set(names)) != len(names):
        raise UserInputError("every job of a batch needs its own name (the batch table and report show it)")
    hard_lease = hard_lease_seconds(hard_lease_minutes)
    interactive = sys.stdin.isatty()
    for job in jobs:
        print_summary(job)
    resources = jobs[0].spec.resources
    adapter = make_provider(resources)
    plan = plan_batch(adapter, jobs, rentals)
    show_and_confirm(plan, jobs, adapter, assume_yes=yes, interactive=interactive)
    options = PipelineOptions(
        assume_yes=yes,
        interactive=interactive,
        lease_seconds=lease_seconds or plan.lease_seconds,
        grace_seconds=grace_seconds,
        hard_lease_seconds=hard_lease,
    )
    store = JobStore()
    batch = BatchRun(
        jobs,
        plan,
        lambda: make_provider(resources),  # one adapter (one HTTP session) per rental's thread
        store=store,
        connect=connect_transport,
        options=options,
        max_cost=resources.max_cost,
        sweep=sweep,
        on_moved=(lambda run: claimed.add_runs([run])) if claimed is not None else None,
    )
    if claimed is not None:
        claimed.add_runs(run for slot in batch.slots for run in slot.runs)
    with store.holding(batch.job_ids, "submit"):
        try:
            follow(batch, interactive=interactive)
        finally:
            for run in batch.current_runs():
                store.release(run.state.job_id)  # the moved attempts' locks (the first ones: `holding`)
    conclude(batch)
