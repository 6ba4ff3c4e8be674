"""Finish: settle the engine's outcome, bring every output home and verify it, write the report, and teach the
calibration table what this job really cost. Nothing is destroyed while an output is not home (#11.5).
"""

from __future__ import annotations

import dataclasses

from lorarun.runner.console import err_console
from lorarun.runner.errors import EngineFailed
from lorarun.runner.price.calibration_record import record_job
from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run import interruption
from lorarun.runner.run.captions_home import place_captions
from lorarun.runner.run.context import JobRun, RunContext
from lorarun.runner.run.local_writes import is_local_write_error
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.run.outputs_home import (
    OutputsNotHome,
    bring_home,
    instance_grace_seconds,
    local_write_problem,
    not_home_error,
)
from lorarun.runner.run.progress import pull_bar
from lorarun.runner.run.report import write_report
from lorarun.sshlink.transport import Transport


def finish(ctx: RunContext, run: JobRun, transport: Transport, layout: RemoteLayout, monitor: JobMonitor) -> None:
    ctx.advance(run, "finish")
    started = ctx.clock.now()
    settled = monitor.settle()
    with pull_bar() as shown:
        home = bring_home(monitor, run.job.spec.output_dir, sleep=ctx.clock.sleep, progress=shown)
    ctx.notify.outputs_home(run, monitor.progress.pulled, final=True)
    place_captions(run.job.spec)  # `dataset.captions`: the instance's captions beside the user's images
    run.timings["download"] = ctx.clock.now() - started
    verification = home.verification
    outcome = settled or ("stopped" if ctx.stop_requested else "failed")
    if not home.complete:
        # Never destroy what is not home yet (#11.5): the instance stays for its grace window, its agent armed.
        raise hold_outputs(ctx, run, home.problems)
    try:
        _write_report(ctx, run, monitor, verification, outcome)
    except OSError as exc:  # every output is home and verified by now: only the report is missing (#27)
        if not is_local_write_error(exc):
            raise
        err_console.print(f"[yellow]report not written: {local_write_problem(exc, run.job.spec.output_dir)}[/]")
    # No `collected` marker here: the agent keeps its grace window and self-destroy armed until teardown has
    # destroyed the instance (and the agent with it). Told earlier, a destroy that fails would leave nothing on
    # the instance to end the billing (#15.5).
    if monitor.progress.refused:
        err_console.print(
            f"[yellow]refused {len(monitor.progress.refused)} manifest path(s) that would land "
            f"outside {run.job.spec.output_dir}: {', '.join(map(repr, monitor.progress.refused[:3]))}"
            f"[/]",
            highlight=False,
        )
    home.raise_if_bad_on_instance(run.job.spec.output_dir)  # the instance's copy is bad, not this laptop's disk
    verification.raise_if_bad()  # after the report: the user sees which file is wrong and why
    if outcome == "failed":
        raise EngineFailed(
            f"training failed: {monitor.progress.reason or 'see ' + str(run.job.spec.output_dir)}"
            f" (outputs saved so far are in {run.job.spec.output_dir})"
        )
    if outcome == "finished":
        record_job(run=run, offer=ctx.rental.offer, provider=ctx.provider.name)
    run.outcome = outcome
    final = run.job.spec.output_dir / f"{run.job.spec.output.name}.safetensors"
    message = ctx.stop_requested or (f"LoRA saved to {final}" if final.exists() else "finished")
    ctx.record(run, message=message)


def hold_outputs(ctx: RunContext, run: JobRun, problems) -> OutputsNotHome:
    """Outputs not home because of this laptop: teardown keeps the instance (its agent armed for the grace window it
    really has, from agent.json) and the error says what to fix and that `attach` finishes the pull."""
    ctx.held_for_pull = run
    grace = instance_grace_seconds(ctx.store.job_dir(run.state.job_id), ctx.options.grace_seconds)
    return not_home_error(problems, instance_id=ctx.rental.live.id, grace_seconds=grace, job_id=run.state.job_id)


def held_on_local_write_error(ctx: RunContext, run: JobRun, exc: OSError) -> BaseException:
    """A local write error anywhere in monitor/finish (#27): the instance is kept; otherwise `exc` as it was."""
    if not is_local_write_error(exc):
        return exc
    return hold_outputs(ctx, run, [local_write_problem(exc, run.job.spec.output_dir)])


def _write_report(ctx: RunContext, run: JobRun, monitor: JobMonitor, verification, outcome: str) -> None:
    summary = {
        "job_id": run.state.job_id,
        "name": run.state.name,
        "output_name": run.job.spec.output.name,  # whose report this is, in a folder two LoRAs share (#24)
        "provider": ctx.provider.name,
        "instance_id": ctx.rental.instance.id if ctx.rental.instance else None,
        "gpu": ctx.gpu_text(),
        "price_per_hour": ctx.rental.offer.price_per_hour,
        "timings": run.timings,
        "predicted_cost": run.predicted_cost,
        "actual_cost": ctx.spent(),
        "outcome": outcome,
        "stop_reason": ctx.stop_requested,
        # interruptible rentals the provider took back, each resumed on the next one (interruption.py)
        "interruptions": interruption.read_log(ctx.store.job_dir(run.state.job_id)),
        "verification": dataclasses.asdict(verification)
        if dataclasses.is_dataclass(verification) and not isinstance(verification, type)
        else {},
    }
    write_report(run.job.spec.output_dir, summary, monitor.events)
