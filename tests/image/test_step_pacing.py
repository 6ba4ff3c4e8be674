"""image/step_pacing.py with a fake clock: a step shorter than S is stretched to S, a longer one is not, and the
knob is read only from the environment (a bad value is one clear error, not a silent unpaced run)."""

from __future__ import annotations

import pytest

from lorarun.image.step_pacing import PACE_ENV, StepPacer


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_short_steps_are_stretched_to_the_step_time_and_long_ones_are_not():
    t = FakeTime()
    pacer = StepPacer(2.0, clock=t.clock, sleep=t.sleep)
    t.now += 30.0  # loading and caching before training: not a step
    pacer.begin()
    t.now += 0.5  # a step of 0.5 s of work
    pacer.step_done()
    t.now += 3.0  # a step slower than the simulated GPU: no sleep
    pacer.step_done()
    t.now += 1.25
    pacer.step_done()
    assert t.slept == [1.5, 0.75]
    assert pacer.summary() == {"seconds": 2.0, "steps": 3, "busy_s": 4.75, "slept_s": 2.25}


def test_the_knob_comes_from_the_environment_only(monkeypatch):
    monkeypatch.delenv(PACE_ENV, raising=False)
    assert StepPacer.from_env() is None
    monkeypatch.setenv(PACE_ENV, "0")
    assert StepPacer.from_env() is None
    monkeypatch.setenv(PACE_ENV, "2.5")
    pacer = StepPacer.from_env()
    assert pacer is not None and pacer.seconds == 2.5
    monkeypatch.setenv(PACE_ENV, "fast")
    with pytest.raises(RuntimeError, match=PACE_ENV):
        StepPacer.from_env()
