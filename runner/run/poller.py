"""The one poller: call a probe until it returns a value or a deadline passes. The clock and sleep are injected,
so tests drive time instead of waiting for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Clock:
    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], float] = time.time


REAL_CLOCK = Clock()


class PollTimeout(Exception):
    def __init__(self, what: str, waited: float, last: str = ""):
        detail = f" (last: {last})" if last else ""
        super().__init__(f"gave up waiting for {what} after {waited:.0f} s{detail}")
        self.what = what
        self.waited = waited


def poll(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    interval: float = 2.0,
    max_interval: float = 10.0,
    clock: Clock = REAL_CLOCK,
    describe: Callable[[], str] = lambda: "",
) -> T:
    """Return the first non-None value of `probe()`. The interval grows gently (×1.5) up to `max_interval`:
    fast answers for fast hosts, fewer API calls (Vast asks for ~10 s) for slow ones."""
    start = clock.now()
    delay = interval
    while True:
        value = probe()
        if value is not None:
            return value
        waited = clock.now() - start
        if waited >= timeout:
            raise PollTimeout(what, waited, describe())
        clock.sleep(min(delay, max(0.0, timeout - waited)))
        delay = min(delay * 1.5, max_interval)
