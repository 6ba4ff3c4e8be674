"""Wait and connect: poll the provider until the instance runs, then keep trying SSH until it answers.

A start the provider's fields say will never come up raises `boot.StartFailed` (the pipeline may then rent the
next offer); a silent direct SSH port rotates to the instance's fallback endpoints (boot.SSHCandidates).
"""

from __future__ import annotations

from lorarun.provider_adapters.base import Instance, InstanceStatus
from lorarun.runner.console import err_console
from lorarun.runner.errors import PipelineError
from lorarun.runner.run import boot, fault_messages, provider_pace
from lorarun.runner.run.context import RunContext
from lorarun.runner.run.poller import PollTimeout, poll
from lorarun.sshlink.transport import Transport


def wait_ready(ctx: RunContext) -> None:
    for run in ctx.runs:
        if not run.state.is_final:
            ctx.advance(run, "wait")
    instance_id = ctx.rental.live.id
    last = {"status": ""}

    def ready() -> Instance | None:
        instance = provider_pace.look(ctx.provider, instance_id)
        if isinstance(instance, provider_pace.NotYet):  # rate-limited or a 5xx: not yet, never a failed job
            last["status"] = "the provider asked us to slow down"
            return None
        if instance is None or instance.status == InstanceStatus.TERMINATED:
            raise PipelineError(
                f"instance {instance_id} is gone at {ctx.provider.name} (destroyed, or its "
                f"lease ran out); {fault_messages.pulled_so_far_for(ctx)}"
            )
        boot.check_start(instance)  # the provider's fields say it will never come up
        if instance.status in (InstanceStatus.ERROR, InstanceStatus.STOPPED):
            raise boot.StartFailed(instance, instance.status_message or instance.status.value)
        last["status"] = instance.status.value
        if instance.status == InstanceStatus.RUNNING and (instance.ssh or ctx.provider.name == "local"):
            return instance
        return None

    started = ctx.clock.now()
    with err_console.status(f"waiting for instance {instance_id} to boot"):
        try:
            ctx.rental.instance = poll(
                ready,
                what=f"instance {instance_id} to boot",
                timeout=ctx.options.boot_timeout,
                interval=provider_pace.boot_poll_interval(ctx.provider.name),  # Vast: ≥ 2 s (x-rate-limit)
                clock=ctx.clock,
                describe=lambda: last["status"],
            )
        except PollTimeout as exc:
            raise PipelineError(str(exc)) from None
        ssh = ctx.rental.instance.ssh
        if ssh:
            ctx.record_all(ssh_host=ssh.host, ssh_port=ssh.port, ssh_user=ssh.username)
        ctx.rental.transport = connect_with_patience(ctx)
    ctx.primary.timings["boot"] = ctx.clock.now() - started


def connect_with_patience(ctx: RunContext) -> Transport:
    """A fresh instance reports RUNNING before its sshd has our key: keep trying for `ssh_timeout`."""
    from lorarun.sshlink.errors import AuthenticationFailed, ConnectionLost, RemoteTimeout

    errors: list[str] = []
    candidates = boot.SSHCandidates(ctx.rental.live)  # direct first, then e.g. Vast's proxy

    def attempt() -> Transport | None:
        transport = None
        try:
            # One attempt per poll: the poll is the retry, and a silent endpoint must give way to the next one
            # (SSHCandidates) after a few tries, not after the session's reconnect backoff each time.
            job_dir = ctx.store.job_dir(ctx.primary.state.job_id)
            transport = ctx.connect(ctx.rental, ctx.primary.state, job_dir, once=True)
            transport.run("true", timeout=30)
            return transport
        except (ConnectionLost, AuthenticationFailed, RemoteTimeout, OSError) as exc:
            errors.append(str(exc))
            if transport is not None:
                transport.close()  # never leave a half-open session behind on the instance
            if (switch := candidates.failed()) is not None:
                ctx.rental.instance = boot.with_endpoint(ctx.rental.live, switch)
                ctx.record_all(ssh_host=switch.host, ssh_port=switch.port, ssh_user=switch.username)
            return None

    try:
        return poll(
            attempt,
            what="SSH to answer",
            timeout=ctx.options.ssh_timeout,
            interval=2.0,
            clock=ctx.clock,
            describe=lambda: errors[-1] if errors else "",
        )
    except PollTimeout as exc:
        raise PipelineError(str(exc)) from None
