"""Instances that will never come up, and SSH ports that stay silent: fall back instead of waiting on the bill.

Marketplace hosts fail in ways their API shows at once (the adapters read them into `Instance.start_failure`):
Vast "created" with "OCI runtime create failed", an outbid instance stopped by Vast, a RunPod Community pod
running without a public IP. Waiting out the boot timeout would bill minutes for nothing. SkyPilot treats such
states as failed and retries elsewhere (skypilot-org/skypilot `sky/provision/vast/instance.py`); dstack raises
ProvisioningError and moves on to the next offer (dstackai/dstack `backends/vastai/compute.py`). So: destroy
the instance and confirm it, drop that offer and every other offer on the same machine, rent the next one.

A direct SSH port that never answers is the other trap: Vast also routes SSH through its proxy gateway
(`ssh_host`/`ssh_port`, which "works on all machines": vast-ai/docs `connect/ssh.mdx`), so after a few silent
tries on the direct port the proxy is tried before giving up (`SSHCandidates`).

The pipeline calls in here from two small hooks (`wait.wait_ready` raises `StartFailed`; `Pipeline.run` asks
`fall_back_after` whether to provision again).
"""

from __future__ import annotations

import dataclasses

from lorarun.provider_adapters.base import Instance, SSHEndpoint
from lorarun.runner.console import err_console
from lorarun.runner.errors import PipelineError
from lorarun.runner.run.context import RunContext
from lorarun.runner.run.teardown import destroy_and_confirm, report

NO_PUBLIC_IP = "no public IP"  # how adapters begin Instance.start_failure for it (provider_adapters/runpod/adapter.py)
MAX_FALLBACKS = 3  # failed starts in one submission before lorarun stops renting and says why
TRIES_PER_ENDPOINT = 3  # silent SSH tries on one endpoint before the next one is tried


class StartFailed(PipelineError):
    """The provider says this instance will never come up; `fall_back_after` may rent another."""

    def __init__(self, instance: Instance, reason: str):
        super().__init__(f"instance {instance.id} failed to start ({reason})")
        self.instance = instance
        self.reason = reason


def check_start(instance: Instance) -> None:
    """Raise StartFailed when the adapter read a failed start from the provider's fields."""
    if instance.start_failure:
        raise StartFailed(instance, instance.start_failure)


def fall_back_after(pipeline: RunContext, failed: StartFailed) -> bool:
    """Destroy the failed instance and confirm it, exclude its offer and its machine, and say whether another
    offer is left to rent. A reattached job (no ranking), a destroy that could not be confirmed (the teardown
    then tries again and says so loudly) and a submission past MAX_FALLBACKS end with the error instead."""
    instance = pipeline.rental.instance or failed.instance
    for run in pipeline.runs:  # recorded first, so `gc` finds it should this process die while destroying it
        pipeline.record(run, leaked_instance_ids=run.state.leaked_instance_ids + (instance.id,))
    result = destroy_and_confirm(pipeline.provider, instance.id, clock=pipeline.clock)
    report(result)
    if pipeline.rental.transport is not None:
        pipeline.rental.transport.close()
        pipeline.rental.transport = None
    if not result.confirmed:
        return False  # rental.instance stays: the teardown tries again and prints the kill command
    pipeline.rental.instance = None
    pipeline.start_failures += 1
    failures = pipeline.start_failures
    offer = pipeline.rental.offer
    machine = failed.instance.machine or instance.machine or offer.machine
    before = len(pipeline.ranked)
    # A pod that came up without a public IP although one was asked for says that tier cannot promise one
    # (RunPod Community, runpod/docs PodCreateInput.supportPublicIp): prefer Secure Cloud from here on.
    no_ip = failed.reason.startswith(NO_PUBLIC_IP)
    pipeline.ranked = [
        e
        for e in pipeline.ranked
        if e.offer.id != offer.id
        and not (machine and e.offer.machine == machine)
        and not (no_ip and e.offer.provider == offer.provider and e.offer.secure_cloud is False)
    ]
    left = [e for e in pipeline.ranked if e.fits and e.offer.provider == pipeline.provider.name]
    where = f" on machine {machine}" if machine else ""
    err_console.print(
        f"[yellow]instance {instance.id}{where} failed to start[/] ({failed.reason}); "
        f"{before - len(pipeline.ranked)} offer(s) excluded",
        highlight=False,
    )
    if not before or not left or failures > MAX_FALLBACKS:
        return False
    err_console.print(f"renting the next offer ({len(left)} left)", highlight=False)
    return True


class SSHCandidates:
    """The endpoints of one instance in order (direct first, then e.g. Vast's proxy); after TRIES_PER_ENDPOINT
    failed tries the next one is used, round and round until the caller's timeout."""

    def __init__(self, instance: Instance):
        self.endpoints: list[SSHEndpoint] = [e for e in (instance.ssh, *instance.ssh_fallbacks) if e is not None]
        self._failures = 0

    def current(self) -> SSHEndpoint | None:
        if not self.endpoints:
            return None
        return self.endpoints[(self._failures // TRIES_PER_ENDPOINT) % len(self.endpoints)]

    def failed(self) -> SSHEndpoint | None:
        """Count one failed try; return the endpoint to switch to, or None to stay."""
        before = self.current()
        self._failures += 1
        after = self.current()
        return after if after != before else None


def with_endpoint(instance: Instance, endpoint: SSHEndpoint) -> Instance:
    return dataclasses.replace(instance, ssh=endpoint)
