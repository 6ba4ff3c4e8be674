"""#24: two jobs never write the same output file. The fake Vast.ai API over loopback, its instances real sshd
processes, the real engine; the first submit a real second process held at a named point (image/hold_points.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.cloud import tiny_job
from support.shared_clock import QUICK_CLI

from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def _submit_process(holds, *jobs: Path) -> subprocess.Popen:
    """`lorarun submit JOB...` in its own process, held once its monitor has seen the first step."""
    code = QUICK_CLI  # the CLI with quick_waits (tests/support/shared_clock.py), as in-process e2e tests run it
    return subprocess.Popen(
        [sys.executable, "-c", code, "submit", *map(str, jobs), "--yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **holds.env("training")},
        start_new_session=True,
    )


def _creates(cloud) -> int:
    # vast-cli `create instance`: PUT /api/v0/asks/{id}/ (tests/fakes/vast_server.py)
    return len([r for r in cloud.fake.requests if r.method == "PUT" and "/asks/" in r.path])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(out: Path, name: str = "e2e_lora", report: str = "report.json") -> dict:
    """The run's report says its files were verified, and the LoRA on disk is the file it verified."""
    data = json.loads((out / report).read_text())
    assert data["verified"] is True, data["files"]
    final = next(f for f in data["files"] if Path(f["path"]).name == f"{name}.safetensors")
    assert _sha(out / f"{name}.safetensors") == final["sha256"]
    return data


def _no_claims_left() -> bool:
    folder = JobStore().home / "claims"
    return not folder.exists() or not list(folder.glob("*.json"))


def test_the_same_job_twice_at_once_one_runs_the_other_is_refused_before_renting(vast_cloud, tmp_path, capsys, holds):
    job = tiny_job(tmp_path, vast_cloud.name)
    first = _submit_process(holds, job)
    try:
        holds.wait_reached("training", first)
        (running,) = JobStore().all()
        assert _creates(vast_cloud) == 1

        assert main(["submit", str(job), "--yes"]) == 2
        err = capsys.readouterr().err
        assert f"is being written by job {running.job_id}" in err, err
        assert "--out" in err and "output.name" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1  # one line
        assert _creates(vast_cloud) == 1  # refused before renting: the fake saw no second create
        assert len(JobStore().all()) == 1

        # `--out auto`: the same job again, into a fresh sub-folder, while the first still runs
        assert main(["submit", str(job), "--yes", "--out", "auto"]) == 0, capsys.readouterr().err
        beside = tmp_path / "out" / "e2e_lora-1"
        second = _verified(beside)

        holds.release("training")
        assert first.wait(300) == 0, first.stderr.read().decode()[-2000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    earlier = _verified(tmp_path / "out")
    assert earlier["job_id"] == running.job_id and second["job_id"] != running.job_id
    assert _sha(tmp_path / "out" / "e2e_lora.safetensors") != _sha(beside / "e2e_lora.safetensors")
    assert _creates(vast_cloud) == 2 and vast_cloud.instance_ids() == []
    assert _no_claims_left()


def test_resubmitting_a_finished_job_never_overwrites_its_lora_unasked(vast_cloud, tmp_path, capsys):
    job = tiny_job(tmp_path, vast_cloud.name)
    out = tmp_path / "out"
    assert main(["submit", str(job), "--yes"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    kept = {p.name: _sha(p) for p in out.iterdir() if p.is_file()}
    assert {"e2e_lora.safetensors", "e2e_lora-000001.safetensors", "report.json", "report.html"} <= set(kept)

    assert main(["submit", str(job), "--yes"]) == 2
    err = capsys.readouterr().err
    assert "is an earlier run's output" in err and "--overwrite" in err and "--out auto" in err, err
    assert _creates(vast_cloud) == 1  # refused before renting

    assert main(["submit", str(job), "--yes", "--out", "auto"]) == 0, capsys.readouterr().err
    _verified(out / "e2e_lora-1")
    assert {p.name: _sha(p) for p in out.iterdir() if p.is_file()} == kept  # the earlier run's bytes, unchanged
    _verified(out)

    # --overwrite makes replacing explicit: a new run's LoRA and report in their place
    (first,) = [s for s in JobStore().all() if Path(s.output_dir) == out]
    assert main(["submit", str(job), "--yes", "--overwrite"]) == 0, capsys.readouterr().err
    report = _verified(out)
    assert report["job_id"] != first.job_id
    assert _creates(vast_cloud) == 3 and _no_claims_left()


def test_a_dead_submits_claim_holds_for_its_unfinished_jobs_until_down_takes_it(tmp_path, capsys, holds):
    """A batch (two jobs sharing one output folder, one rental) whose controller is killed: a new submit of one
    of its jobs is refused naming that job (its outputs are still to come home), `down` takes the claim over."""
    alpha, beta = (tiny_job(tmp_path / n, "local", epochs=400) for n in ("a", "b"))
    shared = tmp_path / "shared"
    for path, name in ((alpha, "alpha"), (beta, "beta")):
        path.write_text(path.read_text().replace("dir: out", f"dir: {shared}").replace("e2e_lora", name))
        path.write_text(path.read_text().replace("name: e2e\n", f"name: {name}\n"))
    proc = _submit_process(holds, alpha, beta)
    try:
        holds.wait_reached("training", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    states = {s.name: s for s in JobStore().all()}
    assert set(states) == {"alpha", "beta"}

    assert main(["submit", str(beta), "--yes"]) == 2
    err = capsys.readouterr().err
    assert f"job {states['beta'].job_id}" in err and f"lorarun attach {states['beta'].job_id}" in err, err

    assert main(["down", states["alpha"].job_id]) == 0, capsys.readouterr().err
    # beta never started: its share of the rental went with alpha's `down` (exit 1 says nothing came home)
    assert main(["down", states["beta"].job_id]) in (0, 1)
    assert _no_claims_left()
    assert all(s.is_final for s in JobStore().all())
