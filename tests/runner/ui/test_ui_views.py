"""What the UI shows, from a job's files: the instance as the user must judge it, the order of the list, money
from the price and the rented time, checkpoints with their samples, and only what is home counted as home."""

from __future__ import annotations

import json
import os

import pytest

from lorarun.runner.state import JobState, JobStore
from lorarun.runner.ui.views import EventCache, checkpoints, cost_view, instance_view, job_detail, jobs_list, training


def _state(**kw) -> JobState:
    base = dict(job_id="j-1", name="j", job_file="/j.yaml", provider="vastai", output_dir="/o")
    return JobState(**{**base, **kw})


@pytest.mark.parametrize(
    ("changes", "state", "attention"),
    [
        ({}, "none", False),
        ({"instance_id": "7", "instance_destroyed": True, "phase": "done"}, "destroyed", False),
        ({"instance_id": "7", "phase": "failed"}, "unconfirmed", True),
        ({"instance_id": "7", "phase": "kept"}, "kept", True),
        ({"instance_id": "7", "phase": "monitor", "controller_pid": None}, "orphaned", True),
        ({"instance_id": "7", "phase": "monitor", "controller_pid": os.getpid()}, "up", False),
    ],
)
def test_instance_states(changes, state, attention):
    import socket

    view = instance_view(_state(controller_host=socket.gethostname(), **changes))
    assert (view.state, view.attention) == (state, attention)


def test_a_job_taken_over_by_down_or_attach_is_not_orphaned():
    state = _state(instance_id="7", phase="monitor", controller_pid=None)
    assert instance_view(state, driven=True).state == "up"
    assert instance_view(state, driven=False).state == "orphaned"


def test_the_list_puts_instances_that_may_bill_first_then_the_newest(tmp_path):
    store = JobStore()
    for i, (job_id, phase, destroyed) in enumerate(
        [("old-fail", "failed", False), ("mid-done", "done", True), ("new-done", "done", True)]
    ):
        s = store.create(_state(job_id=job_id, instance_id=f"i{i}", instance_destroyed=destroyed, created_at=100.0 + i))
        store.advance(s, phase)
    assert [r["id"] for r in jobs_list(store, EventCache())] == ["old-fail", "new-done", "mid-done"]


def test_spend_follows_the_price_and_the_rented_time_and_the_report_wins():
    state = _state(instance_id="7", price_per_hour=0.6, history=(("provision", 1000.0),), phase="monitor")
    train = training([{"event": "step", "step": 50, "total_steps": 150, "it_s": 0.5}])
    cost = cost_view(state, train, {}, now=1000.0 + 1800)
    assert cost["spent"] == pytest.approx(0.3)
    assert cost["projected"] == pytest.approx(0.3 + 0.6 * 200 / 3600)  # 100 steps left at 0.5 it/s
    ended = _state(
        instance_id="7",
        price_per_hour=0.6,
        phase="done",
        instance_destroyed=True,
        history=(("provision", 1000.0), ("teardown", 4500.0), ("done", 4600.0)),
    )
    assert cost_view(ended, train, {}, now=99999.0)["spent"] == pytest.approx(0.6)  # the clock stops at the end
    assert cost_view(ended, train, {"cost": {"actual": 0.55}}, now=99999.0)["spent"] == 0.55
    assert cost_view(_state(), train, {}, now=5.0)["spent"] is None  # nothing rented: no money shown as spent


def test_training_reads_steps_phases_and_the_outcome():
    t = training(
        [
            {"event": "started", "total_steps": 40},
            {"event": "progress", "phase": "caching_latents", "done": 3, "total": 8, "unit": "images"},
            {"event": "step", "step": 10, "epoch": 1, "loss": 0.12, "it_s": 2.0},
            {"event": "progress", "phase": "sampling", "done": 0, "total": 1, "unit": "images"},
            {"event": "step", "step": "bad"},
            {"event": "stopped", "step": 12, "reason": "stop signal received"},
        ]
    )
    assert (t.step, t.total_steps, t.epoch, t.loss, t.outcome) == (12, 40, 1, 0.12, "stopped")
    assert t.phases == {}, "caching ended with the first step; the sampling with the next step event"
    assert training(
        [{"event": "step", "step": 1}, {"event": "progress", "phase": "sampling", "done": 0, "total": 2}]
    ).phases == {"sampling": [0, 2, ""]}


def test_checkpoints_carry_their_samples_and_what_is_home(tmp_path):
    out = tmp_path / "out"
    (out / "samples").mkdir(parents=True)
    (out / "l-000001.safetensors").write_bytes(b"x")
    (out / "samples" / "l_e000001_00.png").write_bytes(b"p")
    events = [
        {"event": "checkpoint", "path": "l-000001.safetensors", "step": 4, "epoch": 1, "kind": "epoch"},
        {"event": "sample", "path": "samples/l_e000001_00.png", "step": 4},
        {"event": "checkpoint", "path": "l-000002.safetensors", "step": 8, "epoch": 2, "kind": "epoch"},
        {"event": "sample", "path": "../../etc/passwd", "step": 8},
    ]
    rows = checkpoints(events, out)
    assert [r["step"] for r in rows] == [8, 4]
    assert rows[0]["home"] is False and rows[0]["samples"] == [{"path": "../../etc/passwd", "home": False}]
    assert rows[1]["home"] is True and rows[1]["samples"] == [{"path": "samples/l_e000001_00.png", "home": True}]


def test_the_job_page_reads_a_torn_events_file_and_another_jobs_report_is_not_shown(tmp_path):
    store = JobStore()
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"job_id": "someone-else", "cost": {"actual": 9.0}}))
    (out / "report.html").write_text("<p>other</p>")
    state = store.create(_state(output_dir=str(out)))
    (store.job_dir("j-1") / "events.jsonl").write_text(
        '{"event": "step", "step": 1, "loss": 0.5}\n{"event": "step", "st'
    )
    detail = job_detail(store, state, EventCache())
    assert detail["step"] == 1 and detail["loss_curve"] == [[1, 0.5]] and detail["events_total"] == 1
    assert detail["report"] is None and detail["cost"]["actual"] is None
    assert {f["path"] for f in detail["files"]} == {"report.json", "report.html"}
