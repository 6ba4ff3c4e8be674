"""Faults: each must end with the instance destroyed (or handed over with its id), every checkpoint written
before the fault home, and a clear message. Real sshd instances, the real engine, the fake provider APIs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.cloud import tiny_job
from support.engine_hold import FIRST_EPOCH, hold_engines_until_stopping

from lorarun.provider_adapters import retry
from lorarun.runner.cli.app import main
from lorarun.runner.run import connect, upload
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.state import JobStore
from lorarun.sshlink.session import RetryPolicy

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

FAST_DESTROY = retry.RetryPolicy(max_attempts=12, base_delay=0.05, max_delay=0.2, max_total=30.0)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    # Same code paths, shorter waits: the storm and reconnect logic is what is under test, not the clock.
    monkeypatch.setattr(connect, "PROVIDER_OPTIONS", {"destroy_policy": FAST_DESTROY})
    monkeypatch.setattr(connect, "SSH_RETRY", RetryPolicy(attempts=4, base_delay=0.2, factor=2.0, max_delay=1.0))


def submit(job: Path, *extra: str) -> int:
    return main(["submit", str(job), "--yes", *extra])


def only_state():
    (state,) = JobStore().all()
    return state


def assert_torn_down(cloud, state):
    assert state.instance_destroyed, state.message
    assert cloud.instance_ids() == [], "the fake still has the instance"
    assert not cloud.host.alive(state.instance_id)


def checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.safetensors"))


def _patch_monitor(monkeypatch, hook):
    """Call hook(monitor, n) after each monitor round (n = 1, 2, ...)."""
    original = JobMonitor.poll
    rounds = {"n": 0}

    def poll(self):
        events = original(self)
        rounds["n"] += 1
        hook(self, rounds["n"])
        return events

    monkeypatch.setattr(JobMonitor, "poll", poll)


# ---- Ctrl-C in every phase ------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", ["wait", "upload", "run", "finish"])
def test_ctrl_c_at_phase_start_destroys_the_instance(vast_cloud, tmp_path, monkeypatch, capsys, phase, fault):
    fault.inject(f"Ctrl-C as phase {phase} starts", "exit 130, destroyed")
    job = tiny_job(tmp_path, vast_cloud.name, epochs=1)
    original = JobStore.advance

    def advance(self, state, new_phase, message=""):
        result = original(self, state, new_phase, message)
        if new_phase == phase:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(JobStore, "advance", advance)
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err
    if phase != "finish":  # nothing could have been saved yet: never "outputs pulled so far are in …" (#27)
        assert "nothing was pulled" in err and "pulled so far" not in err, err
    state = only_state()
    assert state.phase in ("done", "stopped", "failed")
    assert_torn_down(vast_cloud, state)


def test_ctrl_c_right_after_create_returned(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    """The worst moment: the provider rented the machine, our process is interrupted before using the answer."""
    fault.inject("Ctrl-C right after create returned", "exit 130, the id recorded, destroyed")
    job = tiny_job(tmp_path, vast_cloud.name, epochs=1)
    provider_cls = type(
        connect.make_provider(
            __import__("lorarun.runner.job.spec", fromlist=["Resources"]).Resources(provider=vast_cloud.name)
        )
    )
    original = provider_cls.create

    def create(self, offer, spec):
        instance = original(self, offer, spec)
        interrupt = KeyboardInterrupt()
        interrupt.instance_id = instance.id  # what an adapter attaches when it holds an id
        raise interrupt

    monkeypatch.setattr(provider_cls, "create", create)
    code = submit(job)
    assert code == 130
    state = only_state()
    assert state.instance_id
    assert_torn_down(vast_cloud, state)


def test_ctrl_c_mid_training_stops_cleanly_and_keeps_checkpoints(
    vast_cloud, tmp_path, monkeypatch, capsys, fault, holds
):
    fault.inject("Ctrl-C mid-training", "engine saves, checkpoints home, destroyed")
    job = tiny_job(tmp_path, vast_cloud.name, epochs=30)
    hold_engines_until_stopping(vast_cloud, monkeypatch, holds, FIRST_EPOCH)  # the Ctrl-C lands before epoch 2
    out = tmp_path / "out"
    pressed = {"done": False}

    def hook(monitor, n):
        if not pressed["done"] and any(p.startswith("e2e_lora-") for p in monitor.progress.pulled):
            pressed["done"] = True  # one Ctrl-C; a second one would mean "destroy now, skip the pull"
            raise KeyboardInterrupt

    _patch_monitor(monkeypatch, hook)
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err
    state = only_state()
    assert state.phase == "stopped", state.message  # the state itself, not only the report (#23.8)
    assert_torn_down(vast_cloud, state)
    saved = checkpoints(out)
    assert "e2e_lora-000001.safetensors" in saved
    # The engine saved its state on the way out (SIGTERM → checkpoint) and it came home too.
    events = [json.loads(line) for line in (JobStore().job_dir(state.job_id) / "events.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "stopped" for e in events)


def test_sigterm_to_the_controller_stops_without_asking(vast_cloud, tmp_path, monkeypatch, capsys, fault, holds):
    fault.inject("SIGTERM to the controller mid-training", "stops without asking, destroyed")
    job = tiny_job(tmp_path, vast_cloud.name, epochs=30)
    hold_engines_until_stopping(vast_cloud, monkeypatch, holds, "engine:step")
    sent = {"done": False}

    def hook(monitor, n):
        if not sent["done"] and monitor.progress.step >= 1:
            sent["done"] = True
            os.kill(os.getpid(), signal.SIGTERM)

    _patch_monitor(monkeypatch, hook)
    code = submit(job)
    assert code == 130
    assert only_state().phase == "stopped"
    assert_torn_down(vast_cloud, only_state())


# ---- the link and the machine ---------------------------------------------------------------------------------
def test_ssh_dropped_mid_upload_reconnects_and_finishes(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject("SSH connections dropped mid-upload", "reconnects, finishes, destroyed")
    job = tiny_job(tmp_path, vast_cloud.name, epochs=1, images=12)
    dropped = {"n": 0}
    original = upload.transfer_bar

    @contextlib.contextmanager
    def dropping_bar(description):
        with original(description) as progress:

            def update(done, total):
                progress(done, total)
                if not dropped["n"] and 0 < done < total:
                    dropped["n"] = vast_cloud.host.drop_connections(only_state().instance_id) or -1

            yield update

    monkeypatch.setattr(upload, "transfer_bar", dropping_bar)
    code = submit(job)
    assert code == 0, capsys.readouterr().err
    assert dropped["n"] > 0, "the test did not manage to cut the connection"
    state = only_state()
    assert state.phase == "done"
    assert_torn_down(vast_cloud, state)
    assert (tmp_path / "out" / "e2e_lora.safetensors").is_file()


def test_ssh_dropped_mid_training_reconnects_and_finishes(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject("SSH connections dropped mid-training", "reconnects, finishes, destroyed")
    job = tiny_job(tmp_path, vast_cloud.name, epochs=3)
    dropped = {"n": 0}

    def hook(monitor, n):
        if not dropped["n"] and monitor.progress.step >= 1:
            dropped["n"] = vast_cloud.host.drop_connections(only_state().instance_id) or -1

    _patch_monitor(monkeypatch, hook)
    code = submit(job)
    assert code == 0, capsys.readouterr().err
    assert dropped["n"] > 0
    state = only_state()
    assert state.phase == "done"
    assert_torn_down(vast_cloud, state)
    assert checkpoints(tmp_path / "out") == [
        "e2e_lora-000001.safetensors",
        "e2e_lora-000002.safetensors",
        "e2e_lora.safetensors",
    ]


def test_instance_vanishing_at_the_provider(vast_cloud, tmp_path, monkeypatch, capsys, fault, holds):
    fault.inject("instance vanishes at the provider", "'vanished' said, checkpoints home, exit 1")
    job = tiny_job(tmp_path, vast_cloud.name, epochs=30)
    vast_cloud.host.extra_env.update(holds.env(FIRST_EPOCH))  # still training when it vanishes (which kills it)

    def hook(monitor, n):
        if vast_cloud.instance_ids() and any(p.startswith("e2e_lora-") for p in monitor.progress.pulled):
            vast_cloud.fake.vanish(only_state().instance_id, run_on_destroy=True)

    _patch_monitor(monkeypatch, hook)
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 1
    assert "vanished" in err
    state = only_state()
    assert state.phase == "failed"
    assert_torn_down(vast_cloud, state)
    assert "e2e_lora-000001.safetensors" in checkpoints(tmp_path / "out")


def test_engine_crash_ends_with_outputs_home_and_instance_destroyed(
    vast_cloud, tmp_path, monkeypatch, capsys, fault, holds
):
    fault.inject("SIGKILL to the engine", "'training failed', outputs home, destroyed")
    job = tiny_job(tmp_path, vast_cloud.name, epochs=30)
    vast_cloud.host.extra_env.update(holds.env(FIRST_EPOCH))  # still training when it is killed
    killed = {"done": False}

    def hook(monitor, n):
        if not killed["done"] and any(p.startswith("e2e_lora-") for p in monitor.progress.pulled):
            killed["done"] = True
            engine_pid = (monitor.agent_status() or {}).get("engine_pid")
            assert engine_pid, "the agent did not report the engine's pid"
            monitor.transport.run(f"kill -KILL {engine_pid}", check=False)  # a hard crash: no event, no save

    _patch_monitor(monkeypatch, hook)
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 1 and "training failed" in err
    state = only_state()
    assert state.phase == "failed"
    assert_torn_down(vast_cloud, state)
    assert "e2e_lora-000001.safetensors" in checkpoints(tmp_path / "out")


def test_destroy_survives_a_429_and_5xx_storm(cloud, tmp_path, capsys, fault):
    for status in [429] * 4 + [503] * 2:
        fault.inject(f"DELETE answers {status}", "destroy retried until confirmed, exit 0")
    job = tiny_job(tmp_path, cloud.name, epochs=1)
    prefix = "/api/v0/instances/" if cloud.name == "vastai" else "/v2/pods/"
    cloud.fake.fail_next("DELETE", prefix, status=429, times=4)
    cloud.fake.fail_next("DELETE", prefix, status=503, times=2)
    code = submit(job)
    assert code == 0, capsys.readouterr().err
    state = only_state()
    assert_torn_down(cloud, state)
    deletes = [r for r in cloud.fake.requests if r.method == "DELETE"]
    assert len(deletes) >= 7


# ---- the controller dies ------------------------------------------------------------------------------------
def _controller(job: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    code = "import sys; from lorarun.runner.cli.app import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, "submit", str(job), "--yes", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def _kill_at(holds, point: str, job: Path, *extra: str) -> None:
    """Run a controller that holds at `point` (image/hold_points.py) and SIGKILL it there: the same place on a fast
    machine and on a loaded one, never a race with a poll of the state file."""
    proc = _controller(job, *extra, env=holds.env(point))
    try:
        holds.wait_reached(point, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_controller_killed_then_attach_finishes_the_job(vast_cloud, tmp_path, capsys, fault, holds):
    fault.inject("SIGKILL to the controller mid-training, then attach", "attach finishes, destroyed")
    job = tiny_job(tmp_path, vast_cloud.name, epochs=3)
    _kill_at(holds, "training", job)
    state = only_state()
    assert not state.instance_destroyed and vast_cloud.instance_ids()  # still up: nothing tore it down
    code = main(["attach", state.job_id])
    assert code == 0, capsys.readouterr().err
    state = only_state()
    assert state.phase == "done"
    assert_torn_down(vast_cloud, state)
    assert (tmp_path / "out" / "e2e_lora.safetensors").is_file()


def test_controller_killed_then_gc_destroys_the_orphan(vast_cloud, tmp_path, capsys, fault, holds):
    fault.inject("SIGKILL to the controller mid-training, then gc", "gc pulls what exists, then destroys it")
    job = tiny_job(tmp_path, vast_cloud.name, epochs=30)
    _kill_at(holds, "training", job)
    code = main(["gc", "--yes", "--provider", vast_cloud.name])
    out = capsys.readouterr().out
    assert code == 0
    assert "controller gone" in out
    state = only_state()
    assert_torn_down(vast_cloud, state)


def test_lease_runs_out_with_no_controller_and_the_agent_destroys_its_instance(cloud, tmp_path, fault, holds):
    fault.inject("controller gone for good mid-training", "lease passes, agent self-destroys with its own key")
    fault.nobody_returns()
    job = tiny_job(tmp_path, cloud.name, epochs=200)
    _kill_at(holds, "training", job, "--lease-seconds", "25", "--grace-seconds", "2")
    state = only_state()
    assert cloud.host.wait_destroyed(state.instance_id, 120), "the agent did not destroy its own instance"
    assert cloud.instance_ids() == []
    # It used its instance-scoped key, never the account key.
    account_key = os.environ["VAST_API_KEY" if cloud.name == "vastai" else "RUNPOD_API_KEY"]
    deletes = [r for r in cloud.fake.requests if r.method == "DELETE" and state.instance_id in r.path]
    assert deletes and all(account_key not in r.headers.get("authorization", "") for r in deletes)
    assert not cloud.host.alive(state.instance_id)


def test_ctrl_c_then_detach_leaves_it_training_and_down_stops_it(
    vast_cloud, tmp_path, monkeypatch, capsys, fault, holds
):
    fault.inject("Ctrl-C → detach, then down from another shell", "keeps training, down stops and destroys")
    job = tiny_job(tmp_path, vast_cloud.name, epochs=30)
    hold_engines_until_stopping(vast_cloud, monkeypatch, holds, FIRST_EPOCH)  # still training when `down` comes
    pressed = {"done": False}

    def hook(monitor, n):
        if not pressed["done"] and monitor.progress.step >= 1:
            pressed["done"] = True
            raise KeyboardInterrupt

    _patch_monitor(monkeypatch, hook)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    from rich.prompt import Prompt

    monkeypatch.setattr(Prompt, "ask", classmethod(lambda cls, *a, **k: "detach"))
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "detached" in err and "lorarun attach" in err
    state = only_state()
    assert not state.instance_destroyed and vast_cloud.instance_ids()  # still training, on purpose
    code = main(["down", state.job_id])  # later, from another shell
    assert code == 0, capsys.readouterr().err
    state = only_state()
    assert_torn_down(vast_cloud, state)
    assert "e2e_lora-000001.safetensors" in checkpoints(tmp_path / "out")
