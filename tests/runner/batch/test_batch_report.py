"""batch.html (runner/batch/report.py): settings side by side with the differing ones highlighted, every loss curve
on one chart, every job's sample grid — rendered by a real headless Chromium (Debian's package) that must load
and decode each grid. Without chromium the browser test skips and says why; the structure tests still run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers_dataset import make_dataset
from PIL import Image

from lorarun.runner.batch.record import BatchJob, BatchRecord, BatchStore
from lorarun.runner.batch.report import write_batch_report
from lorarun.runner.state import JobState, JobStore

JOB = """
name: {name}
model: {{base: "builtin:tiny-sd15"}}
dataset: {{path: data, resolution: 64, min_bucket_reso: 32, max_bucket_reso: 128, bucket_reso_steps: 16}}
training: {{epochs: 1, batch_size: 2, network_dim: {dim}, network_alpha: 2, learning_rate: {lr}}}
sample: {{prompts: ["a photo of mychar"], seed: 7}}
resources: {{provider: local}}
output: {{dir: out/{name}, name: {name}}}
"""


def make_batch(tmp_path: Path, *, grids: bool = True) -> BatchRecord:
    """Three finished jobs on disk as a batch leaves them: state, local events (steps, a grid), outputs, report."""
    make_dataset(tmp_path / "data", {"2_mychar": 2})
    store = JobStore()
    jobs = []
    for n, (dim, lr) in enumerate([(8, "1.0e-4"), (16, "1.0e-4"), (8, "5.0e-5")]):
        name = f"mychar-{n}"
        job_file = tmp_path / f"{name}.yaml"
        job_file.write_text(JOB.format(name=name, dim=dim, lr=lr))
        out = tmp_path / "out" / name
        out.mkdir(parents=True)
        (out / f"{name}.safetensors").write_bytes(b"x" * 64)
        events = [{"event": "step", "step": s, "total_steps": 20, "loss": 0.3 - 0.01 * s + 0.02 * n} for s in range(20)]
        if grids:
            Image.new("RGB", (128, 64), (40 * n, 120, 200)).save(out / f"{name}-grid.png")
            events.append({"event": "grid", "path": f"{name}-grid.png"})
        state = store.create(
            JobState(job_id=f"{name}-abc", name=name, job_file=str(job_file), provider="local", output_dir=str(out))
        )
        for phase in ("validate", "provision", "upload", "run", "monitor", "finish", "teardown", "done"):
            state = store.advance(state, phase, "LoRA saved")
        store.update(state, price_per_hour=0.5, instance_id=f"i{n}", instance_destroyed=True)
        (store.job_dir(state.job_id) / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
        (out / "report.json").write_text(json.dumps({"cost": {"actual": 0.01 * (n + 1)}}))
        jobs.append(BatchJob(name=name, job_file=str(job_file), attempts=(state.job_id,), rental=n % 2 + 1))
    return BatchStore().save(BatchRecord(batch_id="batch-test-0001", provider="local", rentals=2, jobs=tuple(jobs)))


def test_settings_side_by_side_with_the_differences_highlighted(tmp_path):
    record = make_batch(tmp_path)
    html = write_batch_report(record, BatchStore()).read_text()
    highlighted = re.findall(r'<tr class="differs"><td>([^<]+)</td>', html)
    assert set(highlighted) == {"training.network_dim", "training.learning_rate"}
    assert "<td>training.batch_size</td>" in html  # the same ones are listed too, not highlighted
    assert html.count('class="loss"') == 3  # three curves on one chart
    assert html.count('class="sample-grid"') == 3
    assert "$0.030" in html or "$0.03" in html  # cost per job
    assert BatchStore().load(record.batch_id).report.endswith(".html")


def test_jobs_without_grids_say_so(tmp_path):
    record = make_batch(tmp_path, grids=False)
    html = write_batch_report(record, BatchStore()).read_text()
    assert html.count("no sample grid") == 3


def test_batch_report_renders_every_grid_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does): batch.html not rendered")
    record = make_batch(tmp_path)
    page = write_batch_report(record, BatchStore())
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--allow-file-access-from-files",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    # The browser set data-loaded once each image decoded: every job's grid is on the page, not a broken link.
    loaded = re.findall(r'<img class="sample-grid" data-job="([^"]+)"[^>]*data-loaded="yes"', dom)
    assert sorted(loaded) == [j.name for j in record.jobs], dom[:2000]
    assert dom.count("<polyline") == 3
