"""The batch's one live view: a row per job — rental, phase, step/total, loss, $ so far — rebuilt from what is on
disk (each job's state file and the events its monitor appends locally), so the same table serves the running
batch (rich Live) and `lorarun status BATCH`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.table import Table

from lorarun.runner.batch.record import BatchRecord, BatchStore
from lorarun.runner.console import money
from lorarun.runner.state import JobState

TAIL_BYTES = 16384  # the last step event is near the end of events.jsonl; never read a long file whole


def last_step(events: Path) -> dict:
    """The newest `step` event (step, total_steps, loss) in a job's local events file, or {}."""
    try:
        with events.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "step":
            return event
    return {}


def job_spent(state: JobState, now: float | None = None) -> float | None:
    """≈ what this job's time on its rental cost: price × (its first phase on the machine → its end)."""
    if not state.price_per_hour:
        return None
    starts = [t for phase, t in state.history if phase in ("provision", "upload")]
    if not starts:
        return None
    end = state.updated_at if state.is_final else (now or time.time())
    return state.price_per_hour * max(0.0, end - starts[0]) / 3600.0


def batch_table(record: BatchRecord, batches: BatchStore, spent: float | None = None, title: str = "") -> Table:
    table = Table(
        title=title or f"batch {record.batch_id} · {len(record.jobs)} jobs on {record.rentals} rental(s)",
        title_justify="left",
    )
    for column in ("job", "rental", "instance", "phase", "step", "loss", "$ so far", "message"):
        table.add_column(column, overflow="fold", no_wrap=column not in ("message",))
    for job in record.jobs:
        try:
            state = batches.jobs.load(job.job_id)
        except Exception:
            table.add_row(job.name, str(job.rental), "-", "?", "", "", "", "state unreadable")
            continue
        step = last_step(batches.jobs.job_dir(state.job_id) / "events.jsonl")
        total = step.get("total_steps")
        loss = step.get("loss")
        colour = {"done": "green", "stopped": "yellow", "failed": "red", "kept": "yellow"}.get(state.phase, "cyan")
        moved = f" (try {len(job.attempts)})" if len(job.attempts) > 1 else ""
        table.add_row(
            job.name,
            f"{job.rental}{moved}",
            state.instance_id or "-",
            f"[{colour}]{state.phase}[/]",
            f"{step.get('step', 0)}/{total}" if total else "",
            f"{loss:.4f}" if isinstance(loss, (int, float)) else "",
            money(job_spent(state)) if job_spent(state) is not None else "-",
            state.message[:70],
        )
    if spent is not None:
        table.caption = f"spent so far ≈ {money(spent)}"
    return table
