"""`lorarun attach JOB_ID` and `lorarun down JOB_ID`: pick up a job from its state file and carry it to teardown
(attach: follow training to the end; down: stop now, pull what exists, destroy).

One controller drives a job at a time (the lock in `state.py`). A second `attach` says who holds it; `down` while a
live controller holds it asks that controller to stop (a request file it polls) and waits for the outcome; when the
holder is dead, `down` and `attach` take the job over."""

from __future__ import annotations

import os
import socket
import time

import typer

from lorarun.runner.batch.record import is_batch_id
from lorarun.runner.console import err_console
from lorarun.runner.state import JobState, JobStore

# The controller (runner/run/reattach.py: pipeline, provider clients, SSH) is imported where a command drives a
# job, not here: `lorarun --help` imports every command's module and must stay fast (bench/cli_startup.py).


def register(app: typer.Typer) -> None:
    app.command("attach", help="Reconnect to a job and carry it on to teardown.")(attach)
    app.command("down", help="Stop a job: pull what exists, then destroy its instance.")(down)


def attach(job_id: str = typer.Argument(..., help="Job id (a unique prefix is enough), or a batch id.")) -> None:
    if is_batch_id(job_id):  # every job of a batch (runner/batch/)
        from lorarun.runner.cli.batch_verbs import attach_batch

        return attach_batch(job_id)
    from lorarun.runner.run.reattach import reattach

    reattach(job_id, stop=False)


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
    from lorarun.runner.run.reattach import reattach

    reattach(state.job_id, stop=True)


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
                from lorarun.runner.run.reattach import print_ended

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
