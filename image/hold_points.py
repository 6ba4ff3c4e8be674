"""Test-only hold points: a test stops a process at a named point, acts (kills it, moves the clock past a deadline),
then lets it go on, so a fault lands at the same place on a fast machine and on a loaded one. Never set by users.

    LORARUN_TEST_HOLD=phase:run,training      the points to hold at (comma-separated; each holds once per process)
    LORARUN_TEST_HOLD_DIR=/tmp/holds          where the markers go (required with LORARUN_TEST_HOLD)

At a listed point the process writes `<dir>/<point>.reached` (its pid) and waits until `<dir>/<point>.release`
exists, then goes on. Unset (always, outside the tests) a point costs one environment lookup. tests/support/holds.py
is the test side. The points (grep `hold(` for the callers):

    phase:<name>   the controller, right after the job's state records that phase <name> starts (runner/state.py)
    training       the controller, once its monitor has seen the engine's first step (runner/run/monitor.py)
    engine:step    the engine, after it wrote its first step event (image/engine/events.py); it waits busy, using
                   some CPU, so the controller still sees a job that makes progress and renews its lease
    engine:state:<N>  the engine, once the resume state of step N is published (image/engine/state.py finalise)
    engine:caching the engine, as it starts caching latents (image/engine/train.py)
    engine:grid    the engine, as it starts rendering the final grid (image/engine/train.py)

A ':' in a point's name becomes '_' in the marker file names.
"""

from __future__ import annotations

import os
import time

HOLD_ENV = "LORARUN_TEST_HOLD"
HOLD_DIR_ENV = "LORARUN_TEST_HOLD_DIR"
MAX_HOLD_S = 600.0  # a test that forgot to release: fail loudly rather than hang for ever

_passed: set[str] = set()


def marker_stem(point: str) -> str:
    return point.replace(":", "_").replace("/", "_")


def hold(point: str, *, busy: bool = False) -> None:
    """Wait at `point` when a test listed it (see the module's doc); return at once otherwise."""
    wanted = os.environ.get(HOLD_ENV)
    if not wanted or point in _passed or point not in wanted.split(","):
        return
    _passed.add(point)
    folder = os.environ.get(HOLD_DIR_ENV)
    if not folder:
        raise RuntimeError(f"{HOLD_ENV} is set without {HOLD_DIR_ENV}")
    stem = os.path.join(folder, marker_stem(point))
    with open(stem + ".reached.tmp", "w", encoding="utf-8") as fh:
        fh.write(str(os.getpid()))
    os.replace(stem + ".reached.tmp", stem + ".reached")  # whole or absent: the test never reads half a marker
    give_up = time.monotonic() + MAX_HOLD_S
    while not os.path.exists(stem + ".release"):
        if time.monotonic() > give_up:
            raise RuntimeError(f"test hold point {point!r} was never released")
        if busy:
            _spin(0.005)  # ~10 % of a core: CPU ticks the controller counts as progress, little load
        time.sleep(0.045)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
