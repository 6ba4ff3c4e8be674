"""Training: start the agent on the instance, follow it round by round, renew its lease while the job makes
progress (#11.4), and stop the engine cleanly when the user, `lorarun down` or the budget asks.

A lost SSH link or a dead agent is explained by asking the provider whether the instance still exists.
"""

from __future__ import annotations

import json

from lorarun.image.agent_files import LEASE_FILE, AgentConfig
from lorarun.provider_adapters.base import InstanceStatus
from lorarun.provider_adapters.errors import ProviderError
from lorarun.runner.console import err_console, money
from lorarun.runner.errors import PipelineError
from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run import fault_messages, interruption
from lorarun.runner.run.context import JobRun, RunContext, shell_quote
from lorarun.runner.run.lease import LeaseRenewer
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.run.poller import PollTimeout, poll
from lorarun.runner.run.progress import TrainingView
from lorarun.sshlink.transport import Transport


def start_agent(ctx: RunContext, run: JobRun, transport: Transport, layout: RemoteLayout) -> None:
    ctx.advance(run, "run")
    deadline = ctx.clock.wall() + ctx.options.lease_seconds
    # The engine runs data-parallel over every visible GPU by itself (`--num-processes auto`, through
    # `accelerate launch`), so the command is the same on one GPU, eight, or a CPU.
    engine = [
        layout.python,
        "-m",
        "lorarun.image.engine",
        "train",
        "--config",
        layout.engine_config,
        "--num-processes",
        "auto",
    ]
    agent = AgentConfig(
        job_id=run.state.job_id,
        engine_command=tuple(engine),
        output_dir=layout.output,
        lease_deadline=deadline,
        grace_seconds=ctx.options.grace_seconds,
        hard_deadline=ctx.hard_deadline,
        # The adapter's plan as it is: one type on both sides (image/destroy_plan.py); agent.json carries its JSON.
        self_destruct=ctx.provider.self_destruct(),
    )
    job_dir = ctx.store.job_dir(run.state.job_id)
    (job_dir / "agent.json").write_text(agent.to_json(), encoding="utf-8")
    transport.put_file(job_dir / "agent.json", layout.agent_config)
    transport.start_detached(
        f"exec {shell_quote(layout.python)} -m lorarun.image.instance.agent --job-dir {shell_quote(layout.root)}",
        cwd=layout.root,
        log_path=layout.agent_log,
    )
    ctx.record(run, lease_deadline=deadline)


def monitor(ctx: RunContext, run: JobRun, transport: Transport, layout: RemoteLayout) -> JobMonitor:
    ctx.advance(run, "monitor")
    job_dir = ctx.store.job_dir(run.state.job_id)
    monitor = JobMonitor(transport, layout, run.job.spec.output_dir, job_dir / "events.jsonl", now=ctx.clock.now)
    started = ctx.clock.now()
    last_instance_check = started
    renewer = LeaseRenewer(window=ctx.options.lease_seconds, hard_deadline=ctx.hard_deadline, wall=ctx.clock.wall)
    view = TrainingView(run.job.total_steps, ctx.rental.offer.price_per_hour, ctx.max_cost)
    with view:
        while True:
            done = monitor_round(ctx, monitor)
            interruption.after_round(ctx, run, monitor)  # interruptible: the newest resume state home
            ctx.notify.outputs_home(run, monitor.progress.pulled)
            spent = ctx.spent()
            view.update(monitor.progress, spent)
            if done:
                break
            if (dead := monitor.agent_dead()) is not None:
                agent_died(ctx, run, transport, monitor, dead)
                break
            asked = ctx.store.take_stop_request(run.state.job_id)  # `lorarun down` from another terminal
            if asked and not ctx.stop_requested:
                ctx.stop_requested = asked
                err_console.print(
                    f"[yellow]{asked}: the engine saves a checkpoint, then outputs come home[/]", highlight=False
                )
                stop_engine(ctx, transport, layout, monitor)
                break
            if (renewed := renewer.due(monitor.progress.marks)) is not None:
                renew_lease(ctx, run, transport, layout, renewed)
            trained = monitor.progress.total_steps > 0 and monitor.progress.step >= monitor.progress.total_steps
            if (
                ctx.spend and ctx.spend.over(ctx.max_cost) and not ctx.stop_requested and not trained
            ):  # a finished training's final save and samples are never cut
                ctx.stop_requested = (
                    f"budget reached: {money(spent)} spent of max_cost {money(ctx.max_cost)}"
                    f" (keeping enough for the final pull and teardown); stopped cleanly"
                    f" with the last checkpoint"
                )
                err_console.print(f"[yellow]{ctx.stop_requested}[/]", highlight=False)
                stop_engine(ctx, transport, layout, monitor)
                break
            if ctx.clock.now() - last_instance_check > interruption.check_interval(ctx):
                last_instance_check = ctx.clock.now()
                check_instance_alive(ctx)
            ctx.clock.sleep(ctx.options.poll_interval)
    run.timings["training"] = ctx.clock.now() - started
    spp = monitor.seconds_per_step()
    if spp:
        run.timings["seconds_per_step"] = spp
    return monitor


def monitor_round(ctx: RunContext, monitor: JobMonitor) -> bool:
    """One round of following the job; True once the engine is done. A lost SSH link, after the transport's
    own reconnect attempts, is explained by asking the provider whether the instance still exists."""
    from lorarun.sshlink.errors import ConnectionLost

    try:
        monitor.poll()
        return monitor.engine_done()
    except ConnectionLost:
        check_instance_alive(ctx)  # raises "vanished" when the provider no longer has it
        raise


def extend_lease_to_hard(ctx: RunContext, run: JobRun) -> None:
    transport = ctx.rental.transport
    if transport is None or not run.state.remote_dir:
        return
    hard = ctx.hard_deadline
    try:
        if hard is None:
            raw = transport.read_bytes(run.state.remote_dir + "/status.json")
            hard = json.loads(raw).get("hard_deadline") if raw else None
        if hard is not None:
            renew_lease(ctx, run, transport, RemoteLayout(root=run.state.remote_dir, python=""), float(hard))
    except Exception:
        pass


def renew_lease(ctx: RunContext, run: JobRun, transport: Transport, layout: RemoteLayout, deadline: float) -> None:
    """The job makes progress and we are attached: push the agent's working lease to `deadline` (#11.4)."""
    lease = layout.path(LEASE_FILE)
    transport.run(
        f"printf '%s' {deadline:.0f} > {shell_quote(lease + '.tmp')} && mv {shell_quote(lease + '.tmp')} {shell_quote(lease)}",
        timeout=30,
        check=False,
    )
    ctx.record(run, lease_deadline=deadline)


def agent_died(ctx: RunContext, run: JobRun, transport: Transport, monitor: JobMonitor, why: str) -> None:
    """The agent is gone (OOM killer, crashed container) and nothing on the instance will end the job: say so,
    end whatever engine is left (SIGTERM: it saves a checkpoint), and let `_finish` pull what exists; teardown
    follows as on every failure (#11.1)."""
    check_instance_alive(ctx)  # a vanished instance explains it better
    engine_pid = (monitor.agent_status() or {}).get("engine_pid")
    err_console.print(
        f"[red]the agent on instance {ctx.rental.live.id} died ({why}); pulling what exists and tearing down[/]",
        highlight=False,
    )
    if isinstance(engine_pid, int):
        transport.run(f"kill -TERM {engine_pid} 2>/dev/null || true", timeout=30, check=False)
    monitor.progress.reason = f"the agent on the instance died ({why})"
    monitor.progress.outcome = "failed"


def check_instance_alive(ctx: RunContext) -> None:
    try:
        instance = ctx.provider.get(ctx.rental.live.id)
    except ProviderError:
        return  # the API is flaky; the SSH link is the real test
    interruption.check(ctx, instance)  # an interruptible machine taken back is resumed elsewhere
    if instance is None or instance.status == InstanceStatus.TERMINATED:
        raise PipelineError(
            f"instance {ctx.rental.live.id} vanished at {ctx.provider.name}; {fault_messages.pulled_so_far_for(ctx)}"
        )


def stop_engine(ctx: RunContext, transport: Transport, layout: RemoteLayout, monitor: JobMonitor) -> None:
    """Ask the agent to stop (it forwards SIGTERM to the engine, which saves a checkpoint), then wait."""
    transport.run(f"kill -TERM $(cat {shell_quote(layout.agent_pid)}) 2>/dev/null || true", timeout=30, check=False)

    def stopped() -> bool | None:
        monitor.poll()
        if monitor.engine_done():
            return True
        if (dead := monitor.agent_dead()) is not None:  # nobody there to stop: do not wait out stop_timeout
            err_console.print(f"[yellow]the agent is gone ({dead}); pulling what exists[/]", highlight=False)
            return True
        return None

    try:
        poll(
            stopped,
            what="the engine to save its checkpoint and stop",
            timeout=ctx.options.stop_timeout,
            interval=1.0,
            max_interval=3.0,
            clock=ctx.clock,
        )
    except PollTimeout as exc:
        err_console.print(f"[yellow]{exc}; pulling what exists[/]", highlight=False)
