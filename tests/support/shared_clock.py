"""One clock for lorarun's controller and the fake provider, so a test can say "noticed within 60 s of the
interruption" in the time the controller itself keeps, not in the wall-clock time of a loaded test machine.

`SharedClock` is real time plus whatever the controller's own waits skipped: a `sleep(s)` really sleeps at most
`max_real_sleep` and moves the clock on by all of `s`. So the controller's cadences (the 15 s provider check on an
interruptible rental, `runner/run/interruption.py`) run in full on this clock while the test runs fast, and a delay
measured on it is the controller's: its waits, plus the real time its work took. It never runs behind real time, so
deadlines it writes to an instance (leases) only ever come later, never earlier.

    clock = share_clock(monkeypatch, cloud.fake)   # the pipeline's `clock` and `fake.clock` from now on
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from lorarun.runner.run.context import RunContext
from lorarun.runner.run.poller import Clock


class SharedClock:
    def __init__(self, max_real_sleep: float = 0.2) -> None:
        self.max_real_sleep = max_real_sleep
        self.skipped = 0.0  # seconds of waits not really slept
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() + self.skipped

    def wall(self) -> float:
        return time.time() + self.skipped

    def sleep(self, seconds: float) -> None:
        real = max(0.0, min(seconds, self.max_real_sleep))
        time.sleep(real)
        with self._lock:
            self.skipped += max(0.0, seconds - real)

    def as_clock(self) -> Clock:
        return Clock(now=self.now, sleep=self.sleep, wall=self.wall)


def share_clock(monkeypatch, fake, clock: SharedClock | None = None) -> SharedClock:
    """Every pipeline built from now on keeps time on `clock`, and so does the fake provider (its marks and the
    arrival time of each request, `Request.at`)."""
    clock = clock or SharedClock()
    original = RunContext.__init__

    def init(self, *args, **kwargs):
        kwargs["clock"] = clock.as_clock()
        original(self, *args, **kwargs)

    monkeypatch.setattr(RunContext, "__init__", init)
    monkeypatch.setattr(fake, "clock", clock.wall)
    return clock


QUICK_SLEEP_S = 0.25


def _quick_clock(cap: float) -> Clock:
    return Clock(now=time.monotonic, sleep=lambda seconds: time.sleep(max(0.0, min(seconds, cap))), wall=time.time)


def _with_clock(clock: Clock):
    original = RunContext.__init__

    def init(self, *args, **kwargs):
        kwargs.setdefault("clock", clock)
        original(self, *args, **kwargs)

    return init


def quick_waits(monkeypatch, cap: float = QUICK_SLEEP_S) -> Clock:
    """Every pipeline built from now on waits at most `cap` real seconds per sleep, on the real clock: its polls
    (boot, SSH, monitor rounds, teardown confirmation) ask again sooner, and nothing else changes. Unlike
    `SharedClock`, no time is skipped: timeouts, leases and spend run on real time, so a wait can only end sooner
    because its answer came sooner (a boot poll counts the fake's provisioning answers, not seconds).
    A test that brings its own clock (`share_clock`) keeps it."""
    clock = _quick_clock(cap)
    monkeypatch.setattr(RunContext, "__init__", _with_clock(clock))
    return clock


def quick_waits_in_this_process(cap: float = QUICK_SLEEP_S) -> None:
    """quick_waits for a controller process a test starts (QUICK_CLI), for the rest of its life."""
    RunContext.__init__ = _with_clock(_quick_clock(cap))  # type: ignore[method-assign]


# `python -c QUICK_CLI ARGS...`: the lorarun CLI as a process of its own, with quick_waits in force, for the e2e tests
# whose controller must be a separate process (Ctrl-C, a second terminal, a killed controller).
QUICK_CLI = (
    f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
    "from support.shared_clock import quick_waits_in_this_process; quick_waits_in_this_process(); "
    "from lorarun.runner.cli.app import main; sys.exit(main(sys.argv[1:]))"
)
