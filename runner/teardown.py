"""Destroy an instance and *confirm* it is gone — or tell the user, loudly, which instance is still up and how to
kill it. Called from `finally` on every path out of a job, and by `down` and `gc`."""
from __future__ import annotations

from dataclasses import dataclass

from lorarun.provider_adapters.base import InstanceStatus, Provider
from lorarun.provider_adapters.errors import ProviderError

from .console import err_console
from .poller import REAL_CLOCK, Clock, PollTimeout, poll


@dataclass(frozen=True)
class TeardownResult:
    instance_id: str
    confirmed: bool
    message: str


def destroy_and_confirm(provider: Provider, instance_id: str, *, confirm_timeout: float = 120.0,
                        clock: Clock = REAL_CLOCK) -> TeardownResult:
    try:
        provider.destroy(instance_id)  # the adapter retries hardest here (DESTROY_POLICY)
    except ProviderError as exc:
        return _unconfirmed(provider, instance_id, f"destroy failed: {exc}")

    def gone() -> bool | None:
        try:
            instance = provider.get(instance_id)
        except ProviderError:
            return None  # the API blinked: ask again
        if instance is None or instance.status == InstanceStatus.TERMINATED:
            return True
        return None

    try:
        poll(gone, what=f"{provider.name} to confirm instance {instance_id} is gone", timeout=confirm_timeout,
             interval=1.0, max_interval=10.0, clock=clock)
    except PollTimeout as exc:
        try:  # one more destroy: some APIs accept a DELETE while the instance is still starting and then forget it
            provider.destroy(instance_id)
        except ProviderError:
            pass
        return _unconfirmed(provider, instance_id, str(exc))
    return TeardownResult(instance_id, True, f"instance {instance_id} on {provider.name} destroyed (confirmed)")


def _unconfirmed(provider: Provider, instance_id: str, why: str) -> TeardownResult:
    message = (f"INSTANCE {instance_id} ON {provider.name.upper()} MAY STILL BE RUNNING AND BILLING ({why}). "
               f"Kill it now: {provider.kill_hint(instance_id)}")
    return TeardownResult(instance_id, False, message)


def report(result: TeardownResult) -> None:
    if result.confirmed:
        err_console.print(f"[green]✓[/] {result.message}", highlight=False)
    else:
        err_console.rule("[bold red]instance still up", style="red")
        err_console.print(f"[bold red]{result.message}[/]", highlight=False, soft_wrap=True)
        err_console.rule(style="red")
