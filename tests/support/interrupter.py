"""Interrupt an interruptible rental at a named point (the engine held at a checkpoint step, its resume state home),
as the provider would: the fake marks it stopped (Vast outbid) or exited/gone (RunPod spot) and ends its container."""

from __future__ import annotations

from support.engine_hold import held_at, hold_at, state_point

from lorarun.runner.run import resume_state
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.state import JobStore


class Interrupter:
    """Monitor hook: once the engine is held at its step (tests/support/engine_hold.py) and that step's resume state
    is home, the provider takes the instance back."""

    def __init__(self, cloud, tmp_path, steps: list[int], *, gone: bool = False, then=None):
        self.cloud = cloud
        self.gone = gone  # RunPod: the pod disappears from the API too
        self.then = then  # called after each interruption (a test's next fault)
        self.steps = list(steps)  # one interruption per entry, each on the rental current then
        self.done: list[str] = []
        self.tmp = tmp_path
        hold_at(cloud, tmp_path, [*steps, None])

    def __call__(self, monitor: JobMonitor) -> None:
        if not self.steps:
            return
        (state,) = JobStore().all()
        iid = state.instance_id
        if iid in self.done or not held_at(self.tmp, iid, state_point(self.steps[0])):
            return
        home = resume_state.home_state(JobStore().job_dir(state.job_id))
        if home is not None and home[1]["global_step"] == self.steps[0]:
            if self.gone:
                self.cloud.fake.interrupt(iid, gone=True)
            else:
                self.cloud.fake.interrupt(iid)
            if self.then is not None:
                self.then(iid)
            self.done.append(iid)
            self.steps.pop(0)


def _patch(monkeypatch, hook):
    original = JobMonitor.poll

    def poll(self):
        events = original(self)
        hook(self)
        return events

    monkeypatch.setattr(JobMonitor, "poll", poll)


def patch_monitor(monkeypatch, hook) -> None:
    """Call hook(monitor) after each monitor round."""
    original = JobMonitor.poll

    def poll(self):
        events = original(self)
        hook(self)
        return events

    monkeypatch.setattr(JobMonitor, "poll", poll)
