"""`lorarun submit JOB [JOB ...]`: validate → estimate and confirm → rent → upload → train → pull → verify →
destroy. Several job files share one rental, one after another (the guides' "batch 3-5 LoRAs per rental")."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from lorarun.runner.cli.flags import check_flags, hard_lease_seconds
from lorarun.runner.cli.validate import print_summary
from lorarun.runner.console import console, err_console
from lorarun.runner.errors import UserInputError
from lorarun.runner.state import JobStore

# The controller is imported inside the command: `lorarun --help` imports this module to list the command.


def register(app: typer.Typer) -> None:
    app.command("submit", help="Run jobs end to end: rent, train, bring the LoRA home, destroy.")(submit)


def submit(
    jobs: list[Path] = typer.Argument(..., help="Job file(s): lorarun YAML or kohya TOML. Several share one rental."),
    provider: str = typer.Option(None, "--provider", "-p", help="local, ssh, vastai or runpod (overrides the job)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before renting."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output folder (overrides the job's output.dir); `auto`: a fresh sub-folder <output.dir>/<name>-N.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier run's files of the same output.name in the output folder."
    ),
    max_cost: float = typer.Option(
        None,
        "--max-cost",
        help="Refuse offers predicted above this many dollars; stop the job cleanly when spend reaches it.",
    ),
    keep: bool = typer.Option(False, "--keep", help="Leave the instance up afterwards (you destroy it)."),
    lease_seconds: float | None = typer.Option(
        None,
        "--lease-seconds",
        help="The working lease: how long the job runs with no controller attached "
        "(default: estimate × 1.5; renewed while attached and progressing).",
    ),
    hard_lease_minutes: float | None = typer.Option(
        None,
        "--hard-lease-minutes",
        help="The instance's hard deadline after create, in minutes (default: "
        "max_cost ÷ price; without max_cost 4× the estimate, ≥ +2 h).",
    ),
    grace_seconds: float = typer.Option(
        900.0,
        "--grace-seconds",
        hidden=True,
        help="How long the agent waits for a controller before destroying itself.",
    ),
    rentals: int | None = typer.Option(
        None,
        "--rentals",
        "-n",
        help="Run the jobs side by side on up to this many rentals (longest first onto the least-loaded one).",
    ),
) -> None:
    from lorarun.runner.job.output_guard import AUTO, claimed_outputs
    from lorarun.runner.job.provider_choice import ask_provider
    from lorarun.runner.job.validate import validate_job

    check_flags(lease_seconds=lease_seconds, grace_seconds=grace_seconds)
    hard_lease_seconds(hard_lease_minutes)  # refused before anything is estimated or rented
    auto = out is not None and str(out) == AUTO  # `--out ./auto` is a folder named auto
    out = None if auto else out
    if out is not None and len(jobs) > 1:
        raise UserInputError("--out applies to one job; give each job its own output.dir for a batch (or --out auto)")
    interactive = sys.stdin.isatty()
    validated = [validate_job(j, provider=provider, out=out, max_cost=max_cost, check_credentials=True) for j in jobs]
    unchosen = [v for v in validated if not v.spec.resources.provider]
    if unchosen:
        # Checked after the jobs themselves, so bad input is still reported first; then once more against the
        # machine that was chosen (optimizer, precision, credentials).
        provider = ask_provider(str(unchosen[0].spec.source), interactive=interactive)
        validated = [
            validate_job(j, provider=provider, out=out, max_cost=max_cost, check_credentials=True) for j in jobs
        ]
    providers = {v.spec.resources.provider for v in validated}
    if len(providers) > 1:
        raise UserInputError(
            f"a batch must use one provider, got {', '.join(sorted(providers))}; pass --provider to choose"
        )
    # Each job's output files are claimed before anything is rented, until the end (runner/job/output_guard.py):
    # another job writing there, or an earlier run's files without --overwrite, is refused here (exit 2).
    with claimed_outputs(validated, auto=auto, overwrite=overwrite) as claimed:
        _run(
            list(claimed.jobs),
            claimed,
            yes=yes,
            keep=keep,
            interactive=interactive,
            lease_seconds=lease_seconds,
            hard_lease_minutes=hard_lease_minutes,
            grace_seconds=grace_seconds,
            rentals=rentals,
        )


def _run(
    validated, claimed, *, yes, keep, interactive, lease_seconds, hard_lease_minutes, grace_seconds, rentals
) -> None:
    """Estimate, confirm, rent and run the validated jobs, their outputs claimed (`claimed`: output_guard.py)."""
    from lorarun.runner.price.choose import choose_offer
    from lorarun.runner.run.connect import connect_transport, make_provider
    from lorarun.runner.run.pipeline import Pipeline, PipelineOptions

    hard_lease = hard_lease_seconds(hard_lease_minutes)
    if rentals is not None and rentals != 1:  # several rentals side by side: runner/batch/
        from lorarun.runner.cli.batch import run_batch

        run_batch(
            validated,
            rentals=rentals,
            yes=yes,
            keep=keep,
            lease_seconds=lease_seconds,
            hard_lease_minutes=hard_lease_minutes,
            grace_seconds=grace_seconds,
            claimed=claimed,
        )
        return
    for job in validated:
        print_summary(job)
    adapter = make_provider(validated[0].spec.resources)
    choice = choose_offer(adapter, validated, assume_yes=yes, interactive=interactive)
    options = PipelineOptions(
        assume_yes=yes,
        keep=keep,
        interactive=interactive,
        lease_seconds=lease_seconds or choice.lease_seconds,
        grace_seconds=grace_seconds,
        hard_lease_seconds=hard_lease,
    )
    pipeline = Pipeline.start(
        validated,
        adapter,
        list(choice.ranked),
        store=JobStore(),
        connect=connect_transport,
        options=options,
        max_cost=validated[0].spec.resources.max_cost,
    )
    claimed.add_runs(pipeline.runs)  # the claims now name the jobs: they outlive us while a job is unfinished
    with JobStore().holding([r.state.job_id for r in pipeline.runs], "submit"):
        runs = pipeline.run()
    for run in runs:
        print_summary_of(run)


def print_summary_of(run) -> None:
    """The job's last words: outcome, where the LoRA and report are, wall and GPU time, cost against prediction."""
    from lorarun.runner.run.report import summary_lines

    final = run.job.spec.output_dir / f"{run.job.spec.output.name}.safetensors"
    if final.exists():
        console.print(f"[green]✓[/] {run.state.name}: {run.state.message or 'finished'}", highlight=False)
    else:
        err_console.print(f"{run.state.name}: {run.state.message}", highlight=False)
    for line in summary_lines(run.state, run.job.spec.output_dir, run.job.spec.output.name):
        console.print(f"  {line}", highlight=False)
