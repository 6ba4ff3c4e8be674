"""The one retry policy every adapter uses: exponential backoff with full jitter, bounded in attempts and time.

Adapters never sleep themselves: each client call goes through `call(policy, fn)`. Only errors whose
`retryable` flag is set (RateLimitError, TransientError) are retried; everything else is a decision the caller
must make (another offer, another provider, tell the user). `RateLimitError.retry_after` (RunPod's Retry-After)
is a floor for the wait; Vast sends no Retry-After, so backoff alone paces it.

`sleep`, `clock` and `rand` are injectable so tests never really wait and can check the waits chosen.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from lorarun.provider_adapters.errors import ProviderError, RateLimitError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # tries in all, the first one included
    base_delay: float = 0.5  # seconds; the cap of the first backoff window
    max_delay: float = 20.0  # cap of the backoff window (a provider's Retry-After may ask for longer)
    max_total: float = 60.0  # give up rather than start a wait that would end past this many seconds


# Searches, creates, polls: fail within about a minute so the controller can decide (another offer, give up).
DEFAULT_POLICY = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=15.0, max_total=60.0)
# Destroy is what stops the billing: keep trying through a 429/5xx storm for several minutes. Vast's destroy
# threshold is one call per 3 s per identity [providers.md §1.9], so the windows start at 2 s.
DESTROY_POLICY = RetryPolicy(max_attempts=12, base_delay=2.0, max_delay=60.0, max_total=600.0)


@dataclass(frozen=True)
class CallPolicy:
    """How a provider client calls its API, in one value: the HTTP read timeout, the retry policies for
    ordinary calls and for destroys, and the sleep and clock the retries use (injected by tests)."""

    timeout: float = 30.0
    policy: RetryPolicy = DEFAULT_POLICY
    destroy_policy: RetryPolicy = DESTROY_POLICY
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def of(cls, base: CallPolicy | None = None, **overrides) -> CallPolicy:
        """`base` (or the defaults) with some fields replaced: adapters take the fields as keywords too
        (`VastProvider(key, sleep=..., destroy_policy=...)`); an unknown keyword is a TypeError."""
        return dataclasses.replace(base or cls(), **overrides)


def backoff_delay(policy: RetryPolicy, attempt: int, err: ProviderError, rand: Callable[[], float]) -> float:
    """Wait before try number `attempt + 1`: full jitter in [0, min(max_delay, base * 2**(attempt-1))].

    Full jitter (not equal jitter) spreads many clients hitting the same per-identity limit. A provider's
    Retry-After is a floor: waiting less would only earn another 429.
    """
    window = min(policy.max_delay, policy.base_delay * (2 ** (attempt - 1)))
    delay = rand() * window
    retry_after = err.retry_after if isinstance(err, RateLimitError) else None
    if retry_after is not None and retry_after > delay:
        delay = float(retry_after)
    return delay


def call(
    policy: RetryPolicy,
    fn: Callable[[], T],
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
    retry_if: Callable[[ProviderError], bool] | None = None,
    what: str = "",
) -> T:
    """Run `fn`, retrying retryable provider errors per `policy`; re-raise the last error when out of budget.

    `retry_if` narrows what is retried (never widens it): a create retries 429s but not 5xx, because a 5xx or a
    dropped connection may have rented the machine already and a second PUT would rent another.
    """
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except ProviderError as err:
            if not err.retryable or (retry_if is not None and not retry_if(err)):
                raise
            if attempt >= policy.max_attempts:
                log.warning("%s: giving up after %d attempts: %s", what or "call", attempt, err)
                raise
            delay = backoff_delay(policy, attempt, err, rand)
            if clock() - start + delay > policy.max_total:
                log.warning("%s: giving up, next wait %.1fs exceeds the budget: %s", what or "call", delay, err)
                raise
            log.info("%s: attempt %d failed (%s); retrying in %.2fs", what or "call", attempt, err, delay)
            sleep(delay)
