"""Finish: settle the engine's outcome, bring every output home and verify it, write the report, and teach the
calibration table what this job really cost. Nothing is destroyed while an output is not home (#11.5).
"""

from __future__ import annotations

import dataclasses

from lorarun.runner.console import err_console
from lorarun.runner.errors import EngineFailed
from lorarun.runner.price.calibration_record import record_job
from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run.context import JobRun, RunContext
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.run.outputs_home import OutputsNotHome, bring_home
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
    run.timings["download"] = ctx.clock.now() - started
    verification = home.verification
    outcome = settled or ("stopped" if ctx.stop_requested else "failed")
    if not home.complete:
        # Never destroy what is not home yet (#11.5): the instance stays for its grace window, its agent armed.
        ctx.held_for_pull = run
        raise OutputsNotHome(
            f"{len(home.problems)} output(s) could not be brought home: "
            + "; ".join(home.problems)
            + f". Instance {ctx.rental.instance.id} is kept for its grace window (about "
            f"{ctx.options.grace_seconds / 60:.0f} min) so nothing is lost: fix that, then run "
            f"`lorarun attach {run.state.job_id}` to finish the pull and destroy it"
        )
    _write_report(ctx, run, monitor, verification, outcome)
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


def _write_report(ctx: RunContext, run: JobRun, monitor: JobMonitor, verification, outcome: str) -> None:
    summary = {
        "job_id": run.state.job_id,
        "name": run.state.name,
        "provider": ctx.provider.name,
        "instance_id": ctx.rental.instance.id if ctx.rental.instance else None,
        "gpu": ctx.gpu_text(),
        "price_per_hour": ctx.rental.offer.price_per_hour,
        "timings": run.timings,
        "predicted_cost": run.predicted_cost,
        "actual_cost": ctx.spent(),
        "outcome": outcome,
        "stop_reason": ctx.stop_requested,
        "verification": dataclasses.asdict(verification) if dataclasses.is_dataclass(verification) else {},
    }
    write_report(run.job.spec.output_dir, summary, monitor.events)
