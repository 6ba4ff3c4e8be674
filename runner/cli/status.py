"""`lorarun status [JOB_ID]`: the jobs this laptop knows, their phase, and any instance still up."""

from __future__ import annotations

import json
import time

import typer
from rich.table import Table

from lorarun.runner.batch.record import is_batch_id
from lorarun.runner.console import console, money
from lorarun.runner.state import JobState, JobStore


def register(app: typer.Typer) -> None:
    app.command("status", help="List jobs known on this laptop, or show one job.")(status)


def status(job_id: str = typer.Argument(None, help="A job id (a unique prefix is enough).")) -> None:
    store = JobStore()
    if is_batch_id(job_id):  # the batch's live table (runner/batch/)
        from lorarun.runner.cli.batch_verbs import status_batch

        return status_batch(job_id)
    if job_id:
        show_job(store, store.load(job_id))
        return
    states = store.all()
    if not states:
        console.print(f"no jobs yet under {store.jobs_dir}")
        return
    table = Table(title=f"jobs under {store.jobs_dir}", title_justify="left")
    for column in ("job", "name", "provider", "phase", "instance", "started", "message"):
        # Ids and times stay whole (a broken id cannot be pasted into `lorarun attach`); the message gives way.
        table.add_column(column, overflow="fold", no_wrap=column != "message", min_width=len(column))
    for state in states:
        table.add_row(
            state.job_id,
            state.name,
            state.provider,
            _phase(state),
            _instance(state),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(state.created_at)),
            state.message[:80],
        )
    console.print(table)
    from lorarun.runner.cli.batch_verbs import list_batches

    list_batches()  # and the batches those jobs belong to


def show_job(store: JobStore, state: JobState) -> None:
    console.print(
        f"[bold]{state.job_id}[/] ({state.name}) · provider {state.provider} · phase {_phase(state)}", highlight=False
    )
    console.print(f"job file {state.job_file}\noutput   {state.output_dir}", highlight=False)
    if state.instance_id:
        console.print(
            f"instance {_instance(state)} · {state.gpu or ''} · {money(state.price_per_hour)}/h", highlight=False
        )
    if state.message:
        console.print(f"message  {state.message}", highlight=False)
    for phase, t in state.history:
        console.print(f"  {time.strftime('%H:%M:%S', time.localtime(t))}  {phase}", highlight=False)
    events = store.job_dir(state.job_id) / "events.jsonl"
    if events.exists():
        last = [line for line in events.read_text(encoding="utf-8").splitlines() if line.strip()][-3:]
        for line in last:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            console.print(
                f"  last event: {event.get('event')} "
                + " ".join(f"{k}={v}" for k, v in event.items() if k not in ("t", "event")),
                highlight=False,
            )


def _phase(state: JobState) -> str:
    phase = state.phase  # `stopped` for a job stopped on purpose (the state says so: runner/state.py)
    colour = {"done": "green", "stopped": "yellow", "failed": "red", "kept": "yellow"}.get(phase, "cyan")
    return f"[{colour}]{phase}[/]"


def _instance(state: JobState) -> str:
    if not state.instance_id:
        return "-"
    if state.instance_destroyed:
        return f"{state.instance_id} (destroyed)"
    if state.is_final and state.phase != "kept":
        return f"[bold red]{state.instance_id} (NOT confirmed destroyed)[/]"
    return f"{state.instance_id} (up)"
