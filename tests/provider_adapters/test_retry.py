"""The one retry policy: what is retried, how long it waits, when it gives up. Nothing really sleeps."""

from __future__ import annotations

import pytest

from lorarun.provider_adapters import retry
from lorarun.provider_adapters.errors import (
    AuthError,
    CreateFailed,
    NoCapacityError,
    ProviderError,
    RateLimitError,
    TransientError,
)
from lorarun.provider_adapters.retry import DEFAULT_POLICY, DESTROY_POLICY, RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def sleep(self, s: float) -> None:
        self.waits.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


class Flaky:
    """Raises the given errors in turn, then returns 'ok'."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def run(policy, fn, clock, rand=lambda: 1.0, **kw):
    return retry.call(policy, fn, sleep=clock.sleep, clock=clock, rand=rand, **kw)


def test_success_first_time_never_sleeps():
    c = Clock()
    assert run(DEFAULT_POLICY, Flaky(), c) == "ok" and c.waits == []


@pytest.mark.parametrize("err", [RateLimitError("429"), TransientError("502")])
def test_retryable_errors_are_retried(err):
    c, fn = Clock(), Flaky(err, err)
    assert run(DEFAULT_POLICY, fn, c) == "ok" and fn.calls == 3 and len(c.waits) == 2


@pytest.mark.parametrize(
    "err", [AuthError("401"), NoCapacityError("400"), ProviderError("422"), CreateFailed("bid", instance_id="1")]
)
def test_non_retryable_errors_raise_at_once(err):
    c, fn = Clock(), Flaky(err)
    with pytest.raises(type(err)):
        run(DEFAULT_POLICY, fn, c)
    assert fn.calls == 1 and c.waits == []


def test_other_exceptions_are_not_swallowed():
    c = Clock()
    with pytest.raises(KeyError):
        run(DEFAULT_POLICY, Flaky(KeyError("x")), c)


def test_exponential_windows_capped_by_max_delay():
    c = Clock()
    policy = RetryPolicy(max_attempts=7, base_delay=1.0, max_delay=5.0, max_total=1000)
    with pytest.raises(TransientError):
        run(policy, Flaky(*[TransientError("x")] * 10), c)  # rand() = 1.0: the top of every window
    assert c.waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_full_jitter_scales_the_window():
    c = Clock()
    run(RetryPolicy(base_delay=2.0), Flaky(TransientError("x"), TransientError("x")), c, rand=lambda: 0.25)
    assert c.waits == [0.5, 1.0]


def test_retry_after_is_a_floor():
    c = Clock()
    run(DEFAULT_POLICY, Flaky(RateLimitError("429", retry_after=7)), c, rand=lambda: 0.0)
    assert c.waits == [7.0]


def test_retry_after_beyond_budget_gives_up_without_waiting():
    c, fn = Clock(), Flaky(RateLimitError("429", retry_after=3600))
    with pytest.raises(RateLimitError):
        run(DEFAULT_POLICY, fn, c)
    assert c.waits == [] and fn.calls == 1


def test_attempts_are_bounded():
    c, fn = Clock(), Flaky(*[TransientError("x")] * 50)
    with pytest.raises(TransientError):
        run(DEFAULT_POLICY, fn, c, rand=lambda: 0.0)
    assert fn.calls == DEFAULT_POLICY.max_attempts


def test_total_time_is_bounded():
    """A slow provider (each call eats 20 s) exhausts the time budget before the attempts."""
    c = Clock()

    def slow():
        c.now += 20.0
        raise TransientError("timeout")

    policy = RetryPolicy(max_attempts=100, base_delay=1.0, max_delay=1.0, max_total=60.0)
    with pytest.raises(TransientError):
        run(policy, slow, c)
    assert c.now - 100.0 <= 60.0 + 20.0  # never starts a wait that ends past the budget
    assert len(c.waits) < 5


def test_retry_if_narrows_what_is_retried():
    c, fn = Clock(), Flaky(TransientError("502"))
    with pytest.raises(TransientError):
        run(DEFAULT_POLICY, fn, c, retry_if=lambda e: isinstance(e, RateLimitError))
    assert fn.calls == 1
    c, fn = Clock(), Flaky(AuthError("401"))
    with pytest.raises(AuthError):  # cannot widen: AuthError stays fatal
        run(DEFAULT_POLICY, fn, c, retry_if=lambda e: True)


def test_destroy_policy_is_stronger():
    assert DESTROY_POLICY.max_attempts > DEFAULT_POLICY.max_attempts
    assert DESTROY_POLICY.max_total > DEFAULT_POLICY.max_total
    c, fn = Clock(), Flaky(*[RateLimitError("429")] * (DEFAULT_POLICY.max_attempts + 3))
    assert run(DESTROY_POLICY, fn, c) == "ok"
