"""Provision: rent the cheapest offer that takes the create, with the lease and self-destroy plan in its env.

The instance id is written to the job's state the moment a provider returns one, even inside an error (a leaked
create is destroyed and confirmed at once); a create that did not return cleanly is followed by a sweep for an
instance carrying the job's label (#11.2), so no path out of here leaves something billing unseen.
"""

from __future__ import annotations

import json
from pathlib import Path

from lorarun.image.agent_files import DEADLINE_ENV, JOB_ID_ENV, SELF_DESTRUCT_ENV, split_env
from lorarun.provider_adapters.base import Instance, InstanceSpec, InstanceStatus, job_label
from lorarun.runner.console import err_console, money
from lorarun.runner.price.budget import SpendTracker
from lorarun.runner.price.estimate import Estimate
from lorarun.runner.price.offer_choice import create_cheapest
from lorarun.runner.run import stock
from lorarun.runner.run.context import RunContext
from lorarun.runner.run.image_build import registry_login
from lorarun.runner.run.lease import hard_lease_seconds
from lorarun.runner.run.teardown import create_may_have_happened, destroy_and_confirm, report, sweep_label


def provision(ctx: RunContext) -> None:
    for run in ctx.runs:
        ctx.advance(run, "provision")
    primary = ctx.primary
    label = job_label(primary.state.job_id)
    ssh_dir = ctx.store.job_dir(primary.state.job_id) / "ssh"
    public_key = _job_public_key(ssh_dir, primary.state.job_id, ctx.provider.name)
    image = stock.stock_image(ctx.provider.name) if stock.is_stock(ctx.image) else ctx.image
    destruct = ctx.provider.self_destruct()
    hard_deadlines: dict[str, float] = {}

    # A private image: the provider pulls it with the user's own `docker login` for its registry.
    login = None if stock.is_stock(ctx.image) else registry_login(image)

    def spec_for(estimate: Estimate) -> InstanceSpec:
        # The lease from the first second (#11.3): the image's watchdog reads these before any controller
        # connects. Names of variables and URLs only; the instance's own key is the provider's to inject.
        hard = int(
            ctx.clock.wall()
            + hard_lease_seconds(
                estimate.total_seconds, estimate.offer.price_per_hour, ctx.max_cost, ctx.options.hard_lease_seconds
            )
        )
        hard_deadlines[estimate.offer.id] = float(hard)
        env = [(JOB_ID_ENV, primary.state.job_id), (DEADLINE_ENV, str(hard))]
        if destruct is not None:
            env.extend(split_env(SELF_DESTRUCT_ENV, json.dumps(destruct.to_dict(), separators=(",", ":"))))
        return InstanceSpec(
            label=label,
            image=image,
            disk_gb=ctx.primary.job.spec.resources.disk_gb,
            ssh_public_key=public_key,
            env=tuple(env),
            bid_price_per_hour=None,
            registry_login=login,
            regions=tuple(ctx.primary.job.spec.resources.regions or ()),
        )

    try:
        estimate, instance = create_cheapest(
            ctx.provider, ctx.ranked, spec_for, lambda instance_id: on_leaked_instance(ctx, instance_id)
        )
    except BaseException as failure:
        # Ctrl-C while a create was in flight: an adapter that got an id puts it on the exception.
        leaked = getattr(failure, "instance_id", None)
        if leaked:
            adopt(ctx, Instance(provider=ctx.provider.name, id=str(leaked), label=label, status=InstanceStatus.PENDING))
        elif create_may_have_happened(failure):
            sweep_after_failed_create(ctx, label, failure)
        raise
    ctx.rental.offer = estimate.offer
    ctx.hard_deadline = hard_deadlines.get(estimate.offer.id)
    ctx.record_all(
        instance_label=label,
        offer_id=estimate.offer.id,
        gpu=ctx.gpu_text(),
        price_per_hour=estimate.offer.price_per_hour,
        interruptible=bool(estimate.offer.interruptible),
    )
    adopt(ctx, instance)
    err_console.print(
        f"rented [bold]{ctx.gpu_text()}[/] on {ctx.provider.name} as instance "
        f"[bold]{instance.id}[/] at {money(ctx.rental.offer.price_per_hour)}/h",
        highlight=False,
    )


def sweep_after_failed_create(ctx: RunContext, label: str, failure: BaseException) -> None:
    """The create did not return cleanly, yet the provider may have made (or be making) the instance: find it
    by the job's label and destroy it before exiting (#11.2). What is found is recorded like a leaked id."""
    why = "interrupted" if isinstance(failure, KeyboardInterrupt) else f"failed ({type(failure).__name__})"
    err_console.print(
        f"the create {why}; checking for up to {ctx.options.create_sweep_seconds:.0f} s that "
        f"{ctx.provider.name} made no instance labelled {label}",
        highlight=False,
    )

    def found(instance_id: str) -> None:
        for run in ctx.runs:
            ctx.record(run, leaked_instance_ids=run.state.leaked_instance_ids + (instance_id,))

    results = sweep_label(ctx.provider, label, window=ctx.options.create_sweep_seconds, clock=ctx.clock, on_found=found)
    if any(not r.confirmed for r in results):
        ctx.rental.teardown = next(r for r in results if not r.confirmed)


def adopt(ctx: RunContext, instance: Instance) -> None:
    """From here on the instance is ours to destroy: on disk first, then in memory."""
    ctx.record_all(instance_id=instance.id)
    ctx.rental.instance = instance
    ctx.rental.started_at = ctx.clock.wall()
    ctx.spend = SpendTracker.for_instance(
        instance, created_at=ctx.rental.started_at, fallback_price=ctx.rental.offer.price_per_hour, clock=ctx.clock.wall
    )


def on_leaked_instance(ctx: RunContext, instance_id: str) -> None:
    """A create that failed but returned an id (Vast `new_contract`): record it, destroy it, confirm it."""
    for run in ctx.runs:
        ctx.record(run, leaked_instance_ids=run.state.leaked_instance_ids + (instance_id,))
    result = destroy_and_confirm(ctx.provider, instance_id, clock=ctx.clock)
    report(result)


def _job_public_key(ssh_dir: Path, job_id: str, provider_name: str) -> str:
    """A fresh ed25519 key per job (the local provider needs none)."""
    if provider_name == "local":
        return ""
    from lorarun.runner.remote.keys import write_job_keypair

    return write_job_keypair(ssh_dir, job_id)
