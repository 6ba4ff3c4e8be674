"""`lorarun attach JOB_ID` and `lorarun down JOB_ID`: pick up a job from its state file and carry it to teardown
(attach: follow training to the end; down: stop now, pull what exists, destroy).

One controller drives a job at a time (the lock in `state.py`). A second `attach` says who holds it; `down` while a
live controller holds it asks that controller to stop (a request file it polls) and waits for the outcome; when the
holder is dead, `down` and `attach` take the job over."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lorarun.runner.batch.record import is_batch_id
from lorarun.runner.console import console, err_console
from lorarun.runner.state import JobState, JobStore

if TYPE_CHECKING:
    from lorarun.runner.job.validate import ValidatedJob

# The controller (pipeline, provider clients, SSH) is imported where a command drives a job, not here: `lorarun
# --help` imports every command's module and must stay fast (bench/cli_startup.py).


def register(app: typer.Typer) -> None:
    app.command("attach", help="Reconnect to a job and carry it on to teardown.")(attach)
    app.command("down", help="Stop a job: pull what exists, then destroy its instance.")(down)


def attach(job_id: str = typer.Argument(..., help="Job id (a unique prefix is enough), or a batch id.")) -> None:
    if is_batch_id(job_id):  # every job of a batch (runner/batch/)
        from lorarun.runner.cli.batch_verbs import attach_batch

        return attach_batch(job_id)
    _resume(job_id, stop=False)


def down(
    job_id: str = typer.Argument(..., help="Job id (a unique prefix is enough)."),
    wait_seconds: float = typer.Option(
        1800.0, "--wait-seconds", hidden=True, help="How long to wait for the controller holding the job."
    ),
) -> None:
    if is_batch_id(job_id):  # every job of a batch (runner/batch/)
        from lorarun.runner.cli.batch_verbs import down_batch

        return down_batch(job_id, wait_seconds)
    store = JobStore()
    state = store.load(job_id)
    holder = store.lock_holder(state.job_id)
    if not state.is_final and holder is not None and holder.pid and holder.alive() and holder.pid != os.getpid():
        if _delivered(store, state, holder, wait_seconds):
            return
    _resume(state.job_id, stop=True)


def _delivered(store: JobStore, state: JobState, holder, wait_seconds: float) -> bool:
    """Ask the live holder to stop and follow it to the end. False when it died first (the caller takes over)."""
    store.request_stop(state.job_id, f"stopped by `lorarun down` (pid {os.getpid()} on {socket.gethostname()})")
    err_console.print(
        f"job {state.job_id} is driven by {holder.describe()}; asked it to stop: the engine saves "
        f"a checkpoint, outputs come home, the instance is destroyed",
        highlight=False,
    )
    deadline = time.monotonic() + wait_seconds
    with err_console.status("waiting for it") as status:
        while time.monotonic() < deadline:
            state = store.load(state.job_id)
            if state.is_final:
                print_ended(state)  # the holder wrote the report: what it did, the checkpoint home, the cost
                return True
            current = store.lock_holder(state.job_id)
            if current is None or not current.alive():
                err_console.print("[yellow]the controller went away before finishing; taking the job over[/]")
                return False
            status.update(f"waiting for pid {current.pid}: {state.phase}")
            time.sleep(0.5)
    err_console.print(
        f"[yellow]still running after {wait_seconds:.0f} s; the request stands, and {holder.describe()}"
        f" acts on it when training is being monitored[/]",
        highlight=False,
    )
    raise typer.Exit(1)


def _resume(job_id: str, *, stop: bool) -> None:
    store = JobStore()
    state = store.load(job_id)
    if state.is_final and (state.instance_destroyed or not state.instance_id):
        console.print(f"job {state.job_id} is {state.phase}; its instance is gone. {state.message}", highlight=False)
        return
    with store.holding([state.job_id], "down" if stop else "attach"):
        store.take_stop_request(state.job_id)  # a request meant for a holder that died is carried out by us now
        _drive(store, store.load(state.job_id), stop=stop)


def _drive(store: JobStore, state: JobState, *, stop: bool) -> None:
    from lorarun.runner.job.spec import Resources
    from lorarun.runner.job.validate import output_dir_problem
    from lorarun.runner.run.connect import connect_transport, make_provider
    from lorarun.runner.run.fault_messages import pulled_so_far
    from lorarun.runner.run.outputs_home import OutputsNotHome, duration_text, instance_grace_seconds
    from lorarun.runner.run.pipeline import Pipeline, PipelineOptions

    job = _job_for(state)
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
        from lorarun.runner.run.teardown import destroy_and_confirm, report

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
    from lorarun.runner.job.output_guard import claimed_for_attach

    # The job's own output claim, re-taken from its dead submit; refused while another job writes there (#24).
    with claimed_for_attach(job, state.job_id, command="down" if stop else "attach"):
        runs = pipeline.run(stop=stop)
    for run in runs:
        print_ended(run.state, run.job.spec.output.name)


def print_ended(state: JobState, lora_name: str | None = None) -> None:
    """A job's last words wherever it ended: its phase in words, then the summary lines of its report."""
    from lorarun.runner.run.report import summary_lines

    if lora_name is None:
        job = _job_for(state)
        lora_name = job.spec.output.name if job else state.name
    console.print(f"{state.job_id}: {state.phase} — {state.message}", highlight=False)
    for line in summary_lines(state, Path(state.output_dir), lora_name):
        console.print(f"  {line}", highlight=False)


def _job_for(state: JobState) -> ValidatedJob | None:
    """The job as submitted, re-validated (its dataset paths are relative to the original job file)."""
    from lorarun.runner.job.validate import validate_job

    try:
        return validate_job(Path(state.job_file), provider=state.provider, out=Path(state.output_dir))
    except Exception:
        return None
