"""The batch in the foreground: the live table while the rentals run, Ctrl-C (stop or detach, asked once for the
whole batch), SIGTERM (stop), `lorarun down BATCH` from elsewhere (stop), the budget; then the report and the
exit code: 0 only when every job finished.

A rental's thread hears Ctrl-C the way a single job's pipeline does: the answer is raised inside it as the
pipeline's own `TerminateRequested` (stop, no question) or `DetachRequested` — so each rental stops, pulls and
destroys, or detaches, through exactly the code a single job uses (`Pipeline._on_interrupt`)."""

from __future__ import annotations

import ctypes
import signal
import threading
import time

from rich.live import Live

from lorarun.runner.batch.fanout import BatchRun
from lorarun.runner.batch.table import batch_table
from lorarun.runner.console import console, err_console, money
from lorarun.runner.errors import Interrupted, PipelineError, TeardownUnconfirmed
from lorarun.runner.run.pipeline import DetachRequested, TerminateRequested, _sigterm_as_interrupt

REFRESH_SECONDS = 0.5


def raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Deliver `exc_type` inside `thread` at its next Python instruction (CPython's PyThreadState_SetAsyncExc, the
    way Ctrl-C reaches the main thread)."""
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


def interrupt(batch: BatchRun, choice: str) -> None:
    """stop: every rental stops now (running jobs save and come home), nothing new starts. detach: rentals whose
    jobs train keep training (`lorarun attach BATCH`), the others are destroyed."""
    if choice == "detach":
        batch.detached = True
        batch.stop_reason = batch.stop_reason or "detached by the user"
        exc: type[BaseException] = DetachRequested
    else:
        batch.stop("stopped by the user (Ctrl-C)")
        exc = TerminateRequested
    for slot in batch.slots:
        if slot.thread is not None:
            raise_in_thread(slot.thread, exc)


def _ask(interactive: bool) -> str:
    if not interactive:
        return "stop"
    from rich.prompt import Prompt

    try:
        return Prompt.ask(
            "Interrupted. [bold]stop[/] the whole batch (running jobs save and come home, every instance "
            "destroyed) or [bold]detach[/] (training goes on; `lorarun attach BATCH` later)",
            choices=["stop", "detach"],
            default="stop",
            console=err_console,
        )
    except (KeyboardInterrupt, EOFError):
        return "stop"


def follow(batch: BatchRun, *, interactive: bool) -> None:
    """Start the rentals and follow them to the end. Returns when every rental's thread is done."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt) if main else None
    batches = batch.batches
    err_console.print(
        f"batch [bold]{batch.record.batch_id}[/]: {len(batch.record.jobs)} jobs on {len(batch.slots)} rental(s); "
        f"`lorarun status {batch.record.batch_id}` from another terminal, `lorarun down {batch.record.batch_id}` "
        f"stops it",
        highlight=False,
    )

    def view():
        return batch_table(batches.load(batch.record.batch_id), batches, spent=batch.spent())

    try:
        batch.start()
        with Live(view(), console=err_console, refresh_per_second=2, transient=False) as live:
            while batch.alive():
                try:
                    batch.check_budget()
                    batch.poll_stop_request()
                    live.update(view())
                    time.sleep(REFRESH_SECONDS)
                except KeyboardInterrupt as pressed:
                    if batch.stop_reason:
                        err_console.print("stopping: each rental pulls what exists and is destroyed; please wait")
                        continue
                    live.stop()
                    asked = not isinstance(pressed, TerminateRequested)
                    interrupt(batch, _ask(interactive and asked))
                    live.start()
            live.update(view())
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        batch.join()
        batch.clear_stop_requests()


def conclude(batch: BatchRun) -> None:
    """The batch's last words and its exit: report, one line per job, then raise unless every job finished."""
    from lorarun.runner.batch.report import write_batch_report

    record = batch.batches.load(batch.record.batch_id)
    report = write_batch_report(record, batch.batches)
    states = batch.batches.states(record)
    outcomes = batch.outcomes()
    for job, state in zip(record.jobs, states):
        mark = "[green]✓[/]" if outcomes.get(job.name) == "finished" else "[red]✗[/]"
        console.print(f"{mark} {job.name} (rental {job.rental}): {state.phase} — {state.message}", highlight=False)
    console.print(f"batch report  {report}   spent ≈ {money(batch.spent())}", highlight=False)
    if unconfirmed := batch.unconfirmed():
        raise TeardownUnconfirmed("; ".join(unconfirmed))
    if batch.detached:
        err_console.print(
            f"detached: `lorarun attach {record.batch_id}` follows every job again, "
            f"`lorarun down {record.batch_id}` stops them",
            highlight=False,
        )
        return
    unfinished = [(j.name, s.message) for j, s in zip(record.jobs, states) if outcomes.get(j.name) != "finished"]
    if not unfinished:
        return
    summary = f"{len(unfinished)} of {len(record.jobs)} jobs did not finish: " + "; ".join(
        f"{name}: {why or 'no reason recorded'}" for name, why in unfinished
    )
    if batch.stop_reason and batch.stop_reason.startswith("stopped by the user"):
        raise Interrupted(summary)
    raise PipelineError(summary)
