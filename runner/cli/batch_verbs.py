"""`status`, `attach` and `down` given a batch id (`batch-…`) instead of a job id: the same verbs for every
job of the batch at once (runner/batch/). `logs` of a batch is in logs.py, beside the one-line format."""

from __future__ import annotations

import os
import socket
import sys
import time

import typer
from rich.table import Table

from lorarun.runner.batch.fanout import BatchRun
from lorarun.runner.batch.foreground import conclude, follow
from lorarun.runner.batch.record import BatchStore
from lorarun.runner.batch.resume import rebuild_slots, unfinished
from lorarun.runner.batch.table import batch_table
from lorarun.runner.console import console, err_console
from lorarun.runner.job.spec import Resources
from lorarun.runner.run.connect import connect_transport, make_provider
from lorarun.runner.run.pipeline import PipelineOptions


def status_batch(batch_id: str) -> None:
    batches = BatchStore()
    record = batches.load(batch_id)
    console.print(batch_table(record, batches))
    if record.report:
        console.print(f"report  {record.report}", highlight=False)


def list_batches() -> None:
    """Below `status`'s job table: the batches, how far each got."""
    batches = BatchStore()
    records = batches.all()
    if not records:
        return
    table = Table(title=f"batches under {batches.dir}", title_justify="left")
    for column in ("batch", "rentals", "jobs", "done", "failed", "running", "started"):
        table.add_column(column, no_wrap=True)
    for record in records:
        states = list(_states(batches, record))
        done = sum(s.phase == "done" for s in states)
        failed = sum(s.phase == "failed" for s in states)
        table.add_row(
            record.batch_id,
            str(record.rentals),
            str(len(record.jobs)),
            str(done),
            str(failed),
            str(len(states) - done - failed),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created_at)),
        )
    console.print(table)


def _states(batches: BatchStore, record):
    for job in record.jobs:
        try:
            yield batches.jobs.load(job.job_id)
        except Exception:
            continue


def _driven_elsewhere(batches: BatchStore, record) -> bool:
    for _, state in unfinished(record, batches):
        holder = batches.jobs.lock_holder(state.job_id)
        if holder is not None and holder.pid and holder.pid != os.getpid() and holder.alive():
            return True
    return False


def _resumed(batch_id: str) -> BatchRun:
    batches = BatchStore()
    record = batches.load(batch_id)
    resources = Resources(provider=record.provider)
    states = [s for _, s in unfinished(record, batches)]
    max_cost = None
    if states:
        from lorarun.runner.batch.resume import job_for

        job = job_for(states[0])
        resources = job.spec.resources if job else resources
        max_cost = resources.max_cost

    def factory():
        return make_provider(resources)

    options = PipelineOptions(interactive=sys.stdin.isatty())
    slots = rebuild_slots(record, batches, factory, connect=connect_transport, options=options, max_cost=max_cost)
    return BatchRun.resume(
        record, slots, factory, store=batches.jobs, connect=connect_transport, options=options, max_cost=max_cost
    )


def attach_batch(batch_id: str) -> None:
    batches = BatchStore()
    record = batches.load(batch_id)
    if not unfinished(record, batches):
        status_batch(record.batch_id)
        console.print(f"batch {record.batch_id} has ended; nothing to attach to", highlight=False)
        return
    if _driven_elsewhere(batches, record):
        from lorarun.runner.errors import JobBusy

        raise JobBusy(f"batch {record.batch_id} is driven by a live lorarun; `lorarun down {record.batch_id}` stops it")
    import contextlib

    from lorarun.runner.job.output_guard import claimed_for_attach

    batch = _resumed(record.batch_id)
    runs = [run for slot in batch.slots for run in slot.runs]
    ids = [run.state.job_id for run in runs]
    with batches.jobs.holding(ids, "attach"), contextlib.ExitStack() as claims:
        for run in runs:  # each job's own output claim, re-taken from the dead submit (#24)
            claims.enter_context(claimed_for_attach(run.job, run.state.job_id, command="attach"))
        for job_id in ids:
            batches.jobs.take_stop_request(job_id)  # meant for a controller that died: not for us
        follow(batch, interactive=sys.stdin.isatty())
    conclude(batch)


def down_batch(batch_id: str, wait_seconds: float) -> None:
    """A live controller is asked to stop the whole batch and followed; else each rental is stopped from here."""
    batches = BatchStore()
    record = batches.load(batch_id)
    if not unfinished(record, batches):
        status_batch(record.batch_id)
        return
    if _driven_elsewhere(batches, record):
        batches.request_stop(
            record.batch_id, f"stopped by `lorarun down` (pid {os.getpid()} on {socket.gethostname()})"
        )
        err_console.print(f"asked the controller of {record.batch_id} to stop every job; waiting", highlight=False)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if not unfinished(record, batches):
                status_batch(record.batch_id)
                return
            if not _driven_elsewhere(batches, record):
                break  # it died: stop the rest from here
            time.sleep(0.5)
        else:
            raise typer.Exit(1)
    batch = _resumed(record.batch_id)
    batch.stop_reason = "stopped by `lorarun down`"  # nothing new starts; running jobs stop and come home
    ids = [run.state.job_id for slot in batch.slots for run in slot.runs]
    with batches.jobs.holding(ids, "down"):
        for slot in batch.slots:
            if slot.reattached is None:
                for run in slot.runs:  # never rented: nothing to stop, nothing billing
                    batches.jobs.advance(run.state, "failed", "not run: stopped by `lorarun down`")
                continue
            try:
                slot.reattached.run(stop=True)
            except Exception as exc:  # one rental's trouble must not keep the others billing
                err_console.print(f"[red]rental {slot.number}: {exc}[/]", highlight=False)
            finally:
                batch.mark_not_run(slot.runs)  # queued behind the one training: reported as not run
    status_batch(record.batch_id)
