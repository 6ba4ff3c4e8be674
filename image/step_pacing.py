"""Test-only step pacing: a simulated GPU step time for the fake instances. Never set by users, never read from a
job file.

    LORARUN_TEST_STEP_SECONDS=5      every optimizer step takes at least 5 s of wall time (the engine sleeps the rest)

Why: the fake instances of the e2e tests are real sshd processes on one laptop-sized CPU, all training on the same
few cores. On real rentals each instance has its own GPU, so three rentals train side by side at full speed; on the
fakes they would slow each other down ~3× and a batch's wall time (bench/batch_wall.py) would measure the CPU,
not lorarun. With a step time S well above the tiny model's CPU work per step, each fake instance trains at "its
own GPU's" pace, whatever the others do, and the wall measures lorarun's own work around training (renting side by
side, boot, upload, engine start, pull, verify, destroy). The real engine still runs every step and writes real
LoRA files; only the wait is added. The tests put the variable in the fake instances' environment (the fake
host's SetEnv, like the hold points of image/hold_points.py); unset (always, outside tests) it costs one lookup.

At the end the engine emits one `step_pacing` event (S, steps, seconds spent working, seconds slept), so a bench
can say what fraction of each step was real CPU work.
"""

from __future__ import annotations

import os
import time

PACE_ENV = "LORARUN_TEST_STEP_SECONDS"


class StepPacer:
    """Stretch each step to at least `seconds` of wall time: `begin()` before the first step, `step_done()` after
    each optimizer step."""

    def __init__(self, seconds: float, clock=time.monotonic, sleep=time.sleep) -> None:
        self.seconds = seconds
        self._clock, self._sleep = clock, sleep
        self._mark = clock()
        self.steps = 0
        self.busy_s = 0.0
        self.slept_s = 0.0

    @classmethod
    def from_env(cls) -> StepPacer | None:
        """The pacer a test asked for, or None (the engine then runs at its own speed)."""
        raw = os.environ.get(PACE_ENV, "").strip()
        if not raw:
            return None
        try:
            seconds = float(raw)
        except ValueError:
            raise RuntimeError(f"{PACE_ENV}={raw!r} is not a number of seconds") from None
        return cls(seconds) if seconds > 0 else None

    def begin(self) -> None:
        """Training starts now: model loading and caching before it are not steps."""
        self._mark = self._clock()

    def step_done(self) -> None:
        now = self._clock()
        busy = now - self._mark
        self.busy_s += busy
        self.steps += 1
        if busy < self.seconds:
            self._sleep(self.seconds - busy)
            self.slept_s += self.seconds - busy
        self._mark = self._clock()

    def summary(self) -> dict:
        return {
            "seconds": self.seconds,
            "steps": self.steps,
            "busy_s": round(self.busy_s, 3),
            "slept_s": round(self.slept_s, 3),
        }
