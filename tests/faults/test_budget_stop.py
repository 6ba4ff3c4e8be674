"""The budget stop end to end: when the spend reaches max_cost mid-training, the job stops cleanly — the last
checkpoint is pulled home, the instance destroyed through the provider's API — and the user is told why.
Fake provider APIs with real sshd instances and the real engine (see support/cloud.py)."""

from __future__ import annotations

import json

import pytest
from support.cloud import tiny_job
from support.engine_hold import FIRST_EPOCH, hold_engines_until_stopping

from lorarun.runner.cli.app import main
from lorarun.runner.price.budget import SpendTracker
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def test_budget_reached_mid_training_stops_cleanly(cloud, tmp_path, monkeypatch, capsys, fault, holds):
    fault.inject("spend reaches max_cost mid-training", "clean stop, last checkpoint home, destroyed")
    # Predicted well under max_cost (a tiny job on a cheap offer), so the estimate lets it rent.
    job = tiny_job(tmp_path, cloud.name, epochs=30, extra_resources="  max_cost: 2.0")
    out = tmp_path / "out"
    hold_engines_until_stopping(cloud, monkeypatch, holds, FIRST_EPOCH)  # the budget's stop lands before epoch 2
    # Once the first checkpoint is home the machine turns out dearer than predicted: the spend the tracker
    # computes from price × running time is scaled up, as if the instance billed 10^6 times the offer's price.
    scale = {"x": 1.0}
    real_spent = SpendTracker.spent
    monkeypatch.setattr(SpendTracker, "spent", lambda self: real_spent(self) * scale["x"])
    real_poll = JobMonitor.poll

    def poll(self):
        events = real_poll(self)
        if any(p.startswith("e2e_lora-") for p in self.progress.pulled):
            scale["x"] = 1e6
        return events

    monkeypatch.setattr(JobMonitor, "poll", poll)

    code = main(["submit", str(job), "--yes"])
    err = capsys.readouterr().err
    assert "budget reached" in err, err
    (state,) = JobStore().all()
    assert state.instance_destroyed, state.message
    assert cloud.instance_ids() == [], "the fake still has the instance"
    assert not cloud.host.alive(state.instance_id)
    assert "budget reached" in state.message and state.phase == "stopped", state.phase
    # The outputs saved so far came home: at least the first epoch's checkpoint, verified.
    saved = sorted(p.name for p in out.glob("*.safetensors"))
    assert "e2e_lora-000001.safetensors" in saved
    assert len(saved) < 30  # stopped well before the end
    report = json.loads((out / "report.json").read_text())
    assert "budget" in json.dumps(report).lower()
    assert code in (0, 1)  # a clean stop, not a crash: never the internal-error path
    assert "internal error" not in err
