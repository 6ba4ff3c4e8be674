"""`lorarun logs JOB_ID [-f]`: the job's events, one line each; `-f` follows a running job on its instance."""

from __future__ import annotations

import json
import time

import typer

from lorarun.runner.batch.record import is_batch_id
from lorarun.runner.console import console
from lorarun.runner.state import JobStore


def register(app: typer.Typer) -> None:
    app.command("logs", help="Show a job's events; -f follows a running job.")(logs)


def logs(
    job_id: str = typer.Argument(..., help="Job id (a unique prefix is enough)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until the job ends."),
    interval: float = typer.Option(2.0, "--interval", hidden=True),
) -> None:
    if is_batch_id(job_id):  # every job of a batch, each line with its job's name
        return logs_batch(job_id)
    from lorarun.runner.run.monitor import read_jsonl

    store = JobStore()
    state = store.load(job_id)
    local_events = store.job_dir(state.job_id) / "events.jsonl"
    for event in read_jsonl(local_events):
        console.print(format_event(event), highlight=False)
    if not follow or state.is_final:
        return
    from lorarun.runner.run.follow import follow_events

    if not follow_events(store, state, lambda event: console.print(format_event(event), highlight=False), interval):
        console.print("(the job has no running instance to follow)")


def logs_batch(batch_id: str) -> None:
    """Every job's events, each line prefixed with its job's name."""
    from lorarun.runner.batch.record import BatchStore
    from lorarun.runner.run.monitor import read_jsonl

    batches = BatchStore()
    record = batches.load(batch_id)
    for job in record.jobs:
        for event in read_jsonl(batches.jobs.job_dir(job.job_id) / "events.jsonl"):
            console.print(f"{job.name:<20} {format_event(event)}", highlight=False)


def format_event(event: dict) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(float(event.get("t", 0) or 0)))
    kind = event.get("event", "?")
    details = " ".join(f"{k}={_short(v, k)}" for k, v in event.items() if k not in ("t", "event"))
    return f"{stamp} {kind:<11} {details}"


TIME_FIELDS = ("deadline", "_at", "_until", "expires")


def _short(value, key: str = "") -> str:
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and key.endswith(TIME_FIELDS)
        and 1e9 <= value < 1e11
    ):  # unix seconds: shown as the local clock time the user lives in
        return local_time(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def local_time(epoch: float) -> str:
    """`14:03:07` today, `2026-11-30 14:03` on another day: local time, never a raw epoch."""
    when = time.localtime(epoch)
    if time.strftime("%Y-%m-%d", when) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", when)
    return time.strftime("%Y-%m-%d %H:%M", when)
