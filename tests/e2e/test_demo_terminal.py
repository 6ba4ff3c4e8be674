"""The demo as a user sees it at a terminal (#12.5): under a pseudo-terminal, the plan, then one line per phase —
caching, training, sampling, pulling files — and a final summary with wall and GPU time, cost actual against
predicted, and where the LoRA and the report are."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.pty_run import PtyProcess

from lorarun.runner.run.monitor import read_jsonl
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "jobs" / "demo.yaml"


def test_demo_phases_are_visible_under_a_terminal(tmp_path):
    out = tmp_path / "out"
    proc = PtyProcess(["submit", str(DEMO), "--out", str(out)], columns=160)
    proc.expect(r"Start it on .*\(local, no charge\)\? \[y/n\]")  # a local run asks too
    proc.send("y")
    assert proc.wait(timeout=400) == 0, proc.text[-3000:]
    screen = proc.text
    for phase in ("caching latents", "training", "sampling", "outputs home"):
        assert phase in screen, phase
    assert "file(s), latest demo_lora" in screen  # checkpoints come home during training, and it shows
    assert "30/30 · loss" in screen
    assert "images" in screen  # caching N/M images, sampling k/n images
    lora = out / "demo_lora.safetensors"
    assert f"LoRA    {lora}" in screen
    assert f"report  {out / 'report.html'}" in screen
    # the demo runs on this machine: its time is not a provider's bill, and on a CPU it is CPU time (issue 23.8)
    assert " wall, " in screen and "on this machine (" in screen and "not billed by a provider)" in screen
    assert "actual," in screen and "predicted" in screen
    (state,) = JobStore().all()
    events = read_jsonl(JobStore().job_dir(state.job_id) / "events.jsonl")
    phases = {e.get("phase") for e in events if e.get("event") == "progress"}
    assert {"caching_latents", "sampling", "sampling_grid"} <= phases
