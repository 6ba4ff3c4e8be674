"""The controller lock (runner/state.py JobStore.acquire): one controller per job, a dead holder taken over by
exactly one of several takers, and no lock ever read half written."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket

import pytest

from lorarun.runner.errors import JobBusy
from lorarun.runner.state import JobStore

JOB = "job-race"
TAKERS = 8


def _dead_pid() -> int:
    child = multiprocessing.get_context("fork").Process(target=lambda: None)
    child.start()
    child.join()
    return child.pid


def _take(home: str, start, results) -> None:
    os.environ["LORARUN_HOME"] = home
    store = JobStore()
    start.wait()
    try:
        store.acquire(JOB, "attach")
        results.put(("won", os.getpid()))
        start.wait()  # hold the lock until every taker has tried
    except JobBusy as exc:
        results.put(("busy", str(exc)))
        start.wait()


def test_a_dead_holder_is_taken_over_by_exactly_one_of_many_takers(lorarun_home):
    store = JobStore()
    store.job_dir(JOB).mkdir(parents=True, exist_ok=True)
    dead = {"pid": _dead_pid(), "host": socket.gethostname(), "command": "submit", "since": 0.0}
    store.lock_path(JOB).write_text(json.dumps(dead), encoding="utf-8")

    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(TAKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_take, args=(str(lorarun_home), start, results)) for _ in range(TAKERS)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    winners = [who for what, who in outcomes if what == "won"]
    assert len(winners) == 1, outcomes
    assert all("driven by `lorarun attach`" in text for what, text in outcomes if what == "busy"), outcomes
    leftovers = sorted(p.name for p in store.lock_path(JOB).parent.iterdir() if p.name.startswith("controller.lock."))
    assert leftovers == ["controller.lock.guard"], leftovers  # no private lock copies left behind


def test_a_live_holder_is_named_and_kept(lorarun_home):
    store = JobStore()
    store.job_dir(JOB).mkdir(parents=True, exist_ok=True)
    live = {"pid": os.getppid(), "host": socket.gethostname(), "command": "submit", "since": 0.0}
    store.lock_path(JOB).write_text(json.dumps(live), encoding="utf-8")
    with pytest.raises(JobBusy, match=f"pid {os.getppid()}"):
        store.acquire(JOB, "attach")
    assert json.loads(store.lock_path(JOB).read_text()) == live


def test_the_lock_is_never_seen_half_written(lorarun_home):
    store = JobStore()
    store.job_dir(JOB).mkdir(parents=True, exist_ok=True)
    me = store.acquire(JOB, "submit")
    assert store.lock_holder(JOB) == me  # what a reader sees is the whole record, written before it appeared
    store.release(JOB)
    assert store.lock_holder(JOB) is None
