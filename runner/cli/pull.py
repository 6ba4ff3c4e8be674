"""`lorarun pull JOB_ID`: bring a job's outputs home now without attaching (runner/run/pull_now.py)."""

from __future__ import annotations

import typer

from lorarun.runner.console import console, err_console
from lorarun.runner.state import JobStore


def register(app: typer.Typer) -> None:
    app.command("pull", help="Bring a job's outputs home now, without attaching to it (the instance keeps running).")(
        pull
    )


def pull(job_id: str = typer.Argument(..., help="Job id (a unique prefix is enough).")) -> None:
    from lorarun.runner.run.pull_now import pull_outputs_now  # the SSH link: imported when a pull is asked for

    outcome = pull_outputs_now(JobStore(), job_id)
    console.print(outcome.message, highlight=False)
    for rel in outcome.pulled:
        console.print(f"  {rel}", highlight=False)
    for problem in outcome.problems:
        err_console.print(f"[yellow]{problem}[/]", highlight=False)
    if outcome.problems:
        raise typer.Exit(1)
