"""`lorarun publish JOB`: put a finished job's LoRA, grid, samples and model card on the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

import typer

from lorarun.runner.console import console
from lorarun.runner.errors import SpecError, UserInputError
from lorarun.runner.state import ENDED_WELL, JobStore


def register(app: typer.Typer) -> None:
    app.command("publish", help="Publish a finished job's LoRA and model card to the Hugging Face Hub.")(publish)


def publish(
    job_id: str = typer.Argument(..., help="Job id (a unique prefix is enough)."),
    repo: str = typer.Option(None, "--repo", help="Hub repo id (user/name); default: the job's output.hub."),
    public: bool = typer.Option(False, "--public", help="Create the repo public (default: private)."),
) -> None:
    from lorarun.runner.job.hosted_spec import hub_repo_problem
    from lorarun.runner.job.load import load_job
    from lorarun.runner.publish.hub import hub_token
    from lorarun.runner.publish.release import publish_job

    store = JobStore()
    state = store.load(job_id)
    if state.phase not in ENDED_WELL:  # a stopped job's last save came home verified too: asked for, it goes
        raise UserInputError(
            f"job {state.job_id} is {state.phase}: only a job whose LoRA came home verified (done or stopped) "
            "is published"
        )
    if repo and (problem := hub_repo_problem(repo, "--repo")):
        raise UserInputError(problem)
    hub_token()  # no token: one line before reading anything else
    job_dir = store.job_dir(state.job_id)
    source = Path(state.job_file)
    if not source.is_file():  # the user moved it: the copy taken at submit has the same settings
        source = job_dir / source.name
    try:
        spec = load_job(source)
    except SpecError as exc:
        raise UserInputError(f"job {state.job_id}: its job file cannot be read ({exc})") from None
    result = publish_job(
        spec, Path(state.output_dir), state.job_id, job_dir, repo_id=repo, private=False if public else None
    )
    console.print(f"published {len(result.files)} file(s) to {result.url}", highlight=False)
