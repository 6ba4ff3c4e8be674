"""The ways out of a run: Ctrl-C or SIGTERM (stop: pull, destroy; or detach: leave it training), and teardown.

Teardown destroys the instance and confirms it, or says loudly why it is still up: kept on purpose (`--keep`, its
agent released, the watchdog's hard deadline still ends it) or held because outputs are not home yet (its agent
armed, `lorarun attach` finishes the pull). A second Ctrl-C while teardown runs does not stop it.
"""

from __future__ import annotations

import time

from lorarun.runner.console import err_console, money
from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run import fault_messages
from lorarun.runner.run.context import JobRun, RunContext, shell_quote
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.run.outputs_home import instance_grace_seconds
from lorarun.runner.run.teardown import destroy_and_confirm, report
from lorarun.runner.run.training import extend_lease_to_hard, stop_engine


def on_interrupt(ctx: RunContext, ask: bool, detach: bool = False) -> bool:
    """First Ctrl-C: stop (default: pull, destroy) or detach. A second Ctrl-C destroys at once."""
    if ctx.rental.instance is None:
        return False
    started_agent = any(r.state.phase in ("run", "monitor", "finish") for r in ctx.runs)
    if not started_agent:
        return False  # nothing is training: tear down now, there is nothing to save
    choice = "detach" if detach else "stop"  # detach: a batch's Ctrl-C, asked once for every rental
    if ask and ctx.options.interactive and not ctx.options.keep:
        from rich.prompt import Prompt

        err_console.print()
        try:
            choice = Prompt.ask(
                "Interrupted. [bold]stop[/] (pull outputs, destroy the instance) or "
                "[bold]detach[/] (leave it training; `lorarun attach` later)",
                choices=["stop", "detach"],
                default="stop",
                console=err_console,
            )
        except (KeyboardInterrupt, EOFError):
            err_console.print("\nsecond interrupt: destroying the instance now")
            return False
    if choice == "detach":
        run = next(r for r in ctx.runs if r.outcome is None)
        extend_lease_to_hard(ctx, run)  # left training on purpose: only the budget's hard deadline applies
        ctx.record(run, message="detached by the user")
        lease = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.state.lease_deadline or 0))
        err_console.print(
            f"detached: instance {ctx.rental.instance.id} keeps training; "
            f"`lorarun attach {run.state.job_id}` to follow it, `lorarun down {run.state.job_id}` "
            f"to stop it. It destroys itself after its lease ({lease}) if nobody comes back.",
            highlight=False,
        )
        return True
    try:
        graceful_stop(ctx)
    except KeyboardInterrupt:
        err_console.print("\nsecond interrupt: destroying the instance now")
    return False


def graceful_stop(ctx: RunContext, reason: str = "stopped by the user (Ctrl-C)") -> None:
    run = next((r for r in ctx.runs if r.outcome is None), None)
    if run is None or ctx.rental.transport is None or run.state.remote_dir is None:
        return
    err_console.print("stopping: the engine saves a checkpoint, then outputs come home")
    ctx.stop_requested = reason
    layout = RemoteLayout.resolve(ctx.rental.transport, run.state.job_id)
    monitor = JobMonitor(
        ctx.rental.transport,
        layout,
        run.job.spec.output_dir,
        ctx.store.job_dir(run.state.job_id) / "events.jsonl",
        now=ctx.clock.now,
    )
    stop_engine(ctx, ctx.rental.transport, layout, monitor)
    monitor.pull_outputs()
    run.outcome = "stopped"
    ctx.record(run, message=ctx.stop_requested)


def interrupted_message(ctx: RunContext) -> str:
    return f"interrupted; {fault_messages.pulled_so_far_for(ctx)}"


def teardown_guarded(ctx: RunContext) -> None:
    """Teardown must finish even if the user presses Ctrl-C again while it runs."""
    for _ in range(3):
        try:
            teardown(ctx)
            return
        except KeyboardInterrupt:
            err_console.print("teardown in progress; press Ctrl-C again only if you will destroy the instance yourself")
            continue


def teardown(ctx: RunContext) -> None:
    for run in ctx.runs:
        if not run.state.is_final:
            ctx.advance(run, "teardown", run.state.message)
    if ctx.held_for_pull is not None and ctx.rental.instance is not None:
        hold_for_pull(ctx, ctx.held_for_pull)
        return
    if ctx.options.keep and ctx.rental.instance is not None:
        release_agents(ctx)  # kept on purpose: its agent must not destroy it after the grace window
    if ctx.rental.transport is not None:
        try:
            ctx.rental.transport.close()
        except Exception:
            pass
    instance = ctx.rental.instance
    if instance is None:
        for run in ctx.runs:
            finalize(ctx, run, destroyed=True)
        return
    if ctx.options.keep:
        hard = (
            f"; it destroys itself at its hard deadline "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(ctx.hard_deadline))}"
            if ctx.hard_deadline
            else ""
        )
        err_console.print(
            f"[yellow]--keep: instance {instance.id} on {ctx.provider.name} is still up and "
            f"billing {money(ctx.rental.offer.price_per_hour)}/h{hard}. Kill it with: "
            f"{ctx.provider.kill_hint(instance.id)}[/]",
            highlight=False,
        )
        for run in ctx.runs:
            ctx.record(run, phase="kept", message=f"instance {instance.id} kept on purpose")
        return
    result = destroy_and_confirm(ctx.provider, instance.id, clock=ctx.clock)
    ctx.rental.teardown = result
    report(result)
    for run in ctx.runs:
        finalize(ctx, run, destroyed=result.confirmed, teardown_message=None if result.confirmed else result.message)


def hold_for_pull(ctx: RunContext, held: JobRun) -> None:
    """Outputs are still on the instance and could not come home: keep it (said loudly, never silently); its
    agent destroys it after the grace window unless `lorarun attach` finishes the pull first."""
    instance = ctx.rental.live
    if ctx.rental.transport is not None:
        try:
            ctx.rental.transport.close()
        except Exception:
            pass
    grace = instance_grace_seconds(ctx.store.job_dir(held.state.job_id), ctx.options.grace_seconds)  # the agent's
    until = time.strftime("%H:%M:%S", time.localtime(ctx.clock.wall() + grace))
    err_console.print(
        f"[bold yellow]instance {instance.id} on {ctx.provider.name} is kept until about {until} "
        f"(billing {money(ctx.rental.offer.price_per_hour)}/h) because outputs are not home yet; "
        f"`lorarun attach {held.state.job_id}` finishes the pull and destroys it, or it destroys "
        f"itself after that. Kill it now (losing those outputs): "
        f"{ctx.provider.kill_hint(instance.id)}[/]",
        highlight=False,
    )
    for run in ctx.runs:
        ctx.record(
            run, message=f"outputs not home; instance {instance.id} kept for the pull: {run.state.message}"[:500]
        )


def release_agents(ctx: RunContext) -> None:
    """`--keep`: tell each job's agent the instance is kept, so it exits instead of self-destroying (the
    watchdog still ends it at the hard deadline, and the message says so)."""
    for run in ctx.runs:
        if ctx.rental.transport is None or not run.state.remote_dir:
            continue
        try:
            ctx.rental.transport.run(f"touch {shell_quote(run.state.remote_dir + '/kept')}", timeout=30, check=False)
        except Exception:
            pass


def finalize(ctx: RunContext, run: JobRun, *, destroyed: bool, teardown_message: str | None = None) -> None:
    phase = {"finished": "done", "stopped": "stopped"}.get(run.outcome or "", "failed")
    message = run.state.message if not teardown_message else f"{run.state.message} | {teardown_message}"
    ctx.record(run, instance_destroyed=destroyed, message=message)
    ctx.advance(run, phase, message)
