"""Destroy an instance and *confirm* it is gone — or tell the user, loudly, which instance is still up and how to
kill it. Called from `finally` on every path out of a job, and by `down` and `gc`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lorarun.provider_adapters.base import InstanceStatus, Provider
from lorarun.provider_adapters.errors import ProviderError
from lorarun.runner.console import err_console
from lorarun.runner.run.poller import REAL_CLOCK, Clock, PollTimeout, poll


@dataclass(frozen=True)
class TeardownResult:
    instance_id: str
    confirmed: bool
    message: str


def destroy_and_confirm(
    provider: Provider, instance_id: str, *, confirm_timeout: float = 120.0, clock: Clock = REAL_CLOCK
) -> TeardownResult:
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
        poll(
            gone,
            what=f"{provider.name} to confirm instance {instance_id} is gone",
            timeout=confirm_timeout,
            interval=1.0,
            max_interval=10.0,
            clock=clock,
        )
    except PollTimeout as exc:
        try:  # one more destroy: some APIs accept a DELETE while the instance is still starting and then forget it
            provider.destroy(instance_id)
        except ProviderError:
            pass
        return _unconfirmed(provider, instance_id, str(exc))
    return TeardownResult(instance_id, True, f"instance {instance_id} on {provider.name} destroyed (confirmed)")


def _unconfirmed(provider: Provider, instance_id: str, why: str) -> TeardownResult:
    message = (
        f"INSTANCE {instance_id} ON {provider.name.upper()} MAY STILL BE RUNNING AND BILLING ({why}). "
        f"Kill it now: {provider.kill_hint(instance_id)}"
    )
    return TeardownResult(instance_id, False, message)


def report(result: TeardownResult) -> None:
    if result.confirmed:
        err_console.print(f"[green]✓[/] {result.message}", highlight=False)
    else:
        err_console.rule("[bold red]instance still up", style="red")
        err_console.print(f"[bold red]{result.message}[/]", highlight=False, soft_wrap=True)
        err_console.rule(style="red")


def create_may_have_happened(exc: BaseException) -> bool:
    """After a create that did not return cleanly, could the provider have made an instance anyway?

    A definite refusal (a 4xx answer: bad key, no credit, offer gone, no capacity, rate limited, bad request)
    made nothing. Everything else might have: an interrupt or a timeout while the request was in flight, a 5xx
    from a gateway in front of an API that did the work, a connection reset after the request was sent."""
    from lorarun.provider_adapters import errors as perr

    if isinstance(exc, (KeyboardInterrupt, OSError, perr.TransientError)):
        return True
    if isinstance(
        exc,
        (
            perr.NoCapacityError,
            perr.OfferGoneError,
            perr.AuthError,
            perr.InsufficientFundsError,
            perr.RateLimitError,
            perr.CredentialsMissing,
        ),
    ):
        return False  # the provider said no (every offer tried, when several were): nothing was made
    if isinstance(exc, ProviderError):
        return exc.status is None or exc.status >= 500
    return not isinstance(exc, Exception) or type(exc).__module__.startswith(("urllib", "http", "requests", "socket"))


def sweep_label(
    provider: Provider,
    label: str,
    *,
    window: float,
    clock: Clock = REAL_CLOCK,
    on_found: Callable[[str], None] = lambda _id: None,
    interval: float = 2.0,
) -> list[TeardownResult]:
    """Look for instances carrying `label` for up to `window` seconds and destroy (and confirm) each one found.

    Run after a create that did not return cleanly (#11.2): the provider may still be making the instance, so one
    empty listing proves nothing. One create was in flight, so the sweep ends as soon as an instance was found
    and destroyed; otherwise it ends at the window. A Ctrl-C during the sweep is asked about once: the second
    one stops it (the user was told what to check)."""
    results: list[TeardownResult] = []
    seen: set[str] = set()
    deadline = clock.now() + window
    warned = False
    while True:
        try:
            try:
                owned = provider.list_owned()
            except ProviderError:
                owned = []  # the API blinks: ask again until the window ends
            for instance in owned:
                if instance.label != label or instance.id in seen or instance.status == InstanceStatus.TERMINATED:
                    continue
                seen.add(instance.id)
                on_found(instance.id)
                result = destroy_and_confirm(provider, instance.id, clock=clock)
                report(result)
                results.append(result)
            if (results and all(r.confirmed for r in results)) or clock.now() >= deadline:
                return results
            clock.sleep(interval)
        except KeyboardInterrupt:
            if warned:
                err_console.print(
                    f"[bold red]stopped checking; look for an instance labelled {label} at "
                    f"{provider.name} and destroy it (`lorarun gc --provider {provider.name}`)[/]",
                    highlight=False,
                )
                return results
            warned = True
            err_console.print(
                f"still checking that the interrupted create left no instance ({label}); "
                f"press Ctrl-C again to stop checking",
                highlight=False,
            )
