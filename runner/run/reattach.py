"""Reattach: pick a job up from its state file and carry it on to teardown, from this laptop's `lorarun attach`
and `lorarun down` (runner/cli/attach.py) and from `lorarun gc` stopping a job whose controller is gone
(runner/run/orphans.py). One controller drives a job at a time: `reattach` takes the job's lock."""

from __future__ import annotations

import sys
from pathlib import Path

from lorarun.runner.console import console, err_console
from lorarun.runner.job.output_guard import claimed_for_attach
from lorarun.runner.job.spec import Resources
from lorarun.runner.job.validate import ValidatedJob, output_dir_problem, validate_job
from lorarun.runner.run.connect import connect_transport, make_provider
from lorarun.runner.run.fault_messages import pulled_so_far
from lorarun.runner.run.outputs_home import OutputsNotHome, duration_text, instance_grace_seconds
from lorarun.runner.run.pipeline import Pipeline, PipelineOptions
from lorarun.runner.run.report import summary_lines
from lorarun.runner.run.teardown import destroy_and_confirm, report
from lorarun.runner.state import JobState, JobStore


def reattach(job_id: str, *, stop: bool) -> None:
    """Take the job (its lock) and carry it to teardown: `stop` stops it now (down), else training is followed to
    its end (attach). A job already over with its instance gone is only described."""
    store = JobStore()
    state = store.load(job_id)
    if state.is_final and (state.instance_destroyed or not state.instance_id):
        console.print(f"job {state.job_id} is {state.phase}; its instance is gone. {state.message}", highlight=False)
        return
    with store.holding([state.job_id], "down" if stop else "attach"):
        store.take_stop_request(state.job_id)  # a request meant for a holder that died is carried out by us now
        _drive(store, store.load(state.job_id), stop=stop)


def _drive(store: JobStore, state: JobState, *, stop: bool) -> None:
    job = job_for(state)
    provider = make_provider(job.spec.resources if job else Resources(provider=state.provider))
    if not state.instance_id:
        store.advance(state, "failed", "no instance was ever rented")
        console.print(f"job {state.job_id} never got an instance; nothing to do", highlight=False)
        return
    if job is None and (problem := output_dir_problem(Path(state.output_dir), "output folder")):
        # The outputs cannot land (a read-only or unwritable folder, #27): destroying now would lose what is still
        # on the instance. Keep it, armed as it is, and say what to fix.
        grace = instance_grace_seconds(store.job_dir(state.job_id), PipelineOptions().grace_seconds)
        raise OutputsNotHome(
            f"{problem}. Instance {state.instance_id} is kept for its grace window (about {duration_text(grace)}) "
            f"so nothing is lost: fix that, then run `lorarun attach {state.job_id}` again; to give the outputs up "
            f"and stop the billing now: {provider.kill_hint(state.instance_id)}"
        )
    if job is None:
        # The job file moved or broke: we cannot follow training, but we can still stop the billing.
        err_console.print(f"[yellow]job file {state.job_file} is unusable; destroying instance {state.instance_id}[/]")
        result = destroy_and_confirm(provider, state.instance_id)
        report(result)
        store.advance(store.update(state, instance_destroyed=result.confirmed), "failed", result.message)
        return
    pipeline = Pipeline.reattach(
        job,
        state,
        provider,
        store=store,
        connect=connect_transport,
        options=PipelineOptions(interactive=sys.stdin.isatty()),
        max_cost=job.spec.resources.max_cost,
    )
    gone = pipeline.rental.instance is not None and pipeline.rental.instance.status.value == "terminated"
    if gone and (stop or not state.interruptible):  # an interruptible one resumes elsewhere (run/detached_resume.py)
        err_console.print(
            f"[yellow]instance {state.instance_id} is gone at {provider.name}; "
            f"{pulled_so_far(store.job_dir(state.job_id), Path(state.output_dir))}[/]",
            highlight=False,
        )
    # The job's own output claim, re-taken from its dead submit; refused while another job writes there (#24).
    with claimed_for_attach(job, state.job_id, command="down" if stop else "attach"):
        runs = pipeline.run(stop=stop)
    for run in runs:
        print_ended(run.state, run.job.spec.output.name)


def print_ended(state: JobState, lora_name: str | None = None) -> None:
    """A job's last words wherever it ended: its phase in words, then the summary lines of its report."""
    if lora_name is None:
        job = job_for(state)
        lora_name = job.spec.output.name if job else state.name
    console.print(f"{state.job_id}: {state.phase} — {state.message}", highlight=False)
    for line in summary_lines(state, Path(state.output_dir), lora_name):
        console.print(f"  {line}", highlight=False)


def job_for(state: JobState) -> ValidatedJob | None:
    """The job as submitted, re-validated (its dataset paths are relative to the original job file)."""
    try:
        return validate_job(Path(state.job_file), provider=state.provider, out=Path(state.output_dir))
    except Exception:
        return None
