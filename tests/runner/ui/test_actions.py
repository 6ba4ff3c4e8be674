"""The UI's buttons are the CLI's commands: on a job whose controller died (the laptop's `lorarun submit` was
killed, the instance still training), "Pull outputs now" runs `lorarun pull` — outputs home, the instance left
running, the lock let go — and "Stop" runs `lorarun down`, which takes the job over and destroys the instance even
though the UI is closed right after the click. The real engine on the local provider; real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support.cloud import tiny_job

from lorarun.runner.state import JobState, JobStore
from lorarun.runner.ui.actions import chosen_name
from lorarun.runner.ui.server import UIServer
from lorarun.runner.ui.views import CHOSEN_FILE

pytest.importorskip("torch")


def _submit(job: Path) -> subprocess.Popen:
    code = "import sys; from lorarun.runner.cli.app import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, "submit", str(job), "--yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _post(ui: UIServer, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{ui.port}{path}",
        data=json.dumps(body or {}).encode(),
        headers={"X-Lorarun-Token": ui.token, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _checkpoint_home(proc: subprocess.Popen, out: Path, timeout: float = 300) -> JobState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"submit ended early: {proc.stderr.read().decode()[-2000:]}")
        states = JobStore().all()
        if states and states[0].phase == "monitor" and list(out.glob("e2e_lora-*.safetensors")):
            return states[0]
        time.sleep(0.2)
    raise AssertionError("no checkpoint came home")


@pytest.mark.slow
def test_pull_then_stop_a_job_nobody_drives(tmp_path):
    job = tiny_job(tmp_path, "local", epochs=400)
    out = tmp_path / "out"
    proc = _submit(job)
    ui = UIServer(JobStore(), port=0).start()
    closed = False
    try:
        state = _checkpoint_home(proc, out)
        os.killpg(proc.pid, signal.SIGKILL)  # the laptop's controller dies; the instance trains on
        proc.wait(10)
        for f in out.glob("e2e_lora-*.safetensors"):
            f.unlink()  # as if they had never come home

        status, reply = _post(ui, f"/api/jobs/{state.job_id}/pull")
        assert status == 202 and reply["ok"], reply
        ui.actions.wait_all(120)
        (run,) = ui.actions.runs(state.job_id)
        assert run["action"] == "pull" and run["exit_code"] == 0, ui.actions.log_tail(state.job_id)
        assert "pulled" in ui.actions.log_tail(state.job_id)
        assert list(out.glob("e2e_lora-*.safetensors")), "the checkpoints came home again"
        after_pull = JobStore().load(state.job_id)
        assert not after_pull.is_final and not after_pull.instance_destroyed, "a pull never ends the job"
        assert not JobStore().lock_path(state.job_id).exists(), "the pull let go of the job"

        checkpoint = sorted(out.glob("e2e_lora-*.safetensors"))[0].name
        status, reply = _post(ui, f"/api/jobs/{state.job_id}/keep", {"checkpoint": checkpoint})
        assert status == 202 and reply["ok"] and checkpoint in reply["message"], reply
        chosen = json.loads((JobStore().job_dir(state.job_id) / CHOSEN_FILE).read_text())
        assert chosen["path"] == checkpoint and len(chosen["sha256"]) == 64
        kept = out / "e2e_lora-chosen.safetensors"
        assert chosen["copied_to"] == str(kept) and kept.read_bytes() == (out / checkpoint).read_bytes()
        status, reply = _post(ui, f"/api/jobs/{state.job_id}/stop")
        assert status == 409 and "still at work" in reply["message"], "one action at a time per job"
        down = [r for r in ui.actions.runs(state.job_id) if r["action"] == "down"][0]
        assert os.getsid(down["pid"]) != os.getsid(0), "the stop runs in its own session: closing the UI cannot cut it"
        ui.close()  # the user closes the UI at once
        closed = True

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not JobStore().load(state.job_id).is_final:
            time.sleep(0.5)
        ui.actions.wait_all(60)
        final = JobStore().load(state.job_id)
        assert final.phase == "stopped" and final.instance_destroyed, final.message
        assert "stopped by `lorarun down`" in final.message
        assert not JobStore().lock_path(state.job_id).exists()
        assert kept.read_bytes() == (out / checkpoint).read_bytes(), "the pick is untouched by the end of the job"
    finally:
        if not closed:
            ui.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_the_chosen_copy_is_named_after_the_lora():
    assert chosen_name("mychar-000004.safetensors") == "mychar-chosen.safetensors"
    assert chosen_name("my-char-step00000120.safetensors") == "my-char-chosen.safetensors"
    assert chosen_name("odd") == "odd-chosen"


def test_nothing_to_stop_or_pull_on_an_ended_job(tmp_path):
    store = JobStore()
    state = store.create(
        JobState(job_id="gone-aaa111", name="g", job_file="/j.yaml", provider="local", output_dir=str(tmp_path))
    )
    store.advance(store.update(state, instance_id="i-1", instance_destroyed=True), "done", "finished")
    ui = UIServer(store, port=0).start()
    try:
        status, reply = _post(ui, "/api/jobs/gone-aaa111/stop")
        assert status == 409 and "instance is gone already" in reply["message"]
        status, reply = _post(ui, "/api/jobs/gone-aaa111/pull")
        assert status == 409 and "no instance to pull from" in reply["message"]
        status, reply = _post(ui, "/api/jobs/gone-aaa111/keep", {"checkpoint": "../../etc/passwd"})
        assert status == 409 and "not a checkpoint" in reply["message"]
        assert ui.actions.runs("gone-aaa111") == []
    finally:
        ui.close()
