"""Interruptible rentals taken back by the provider in each phase (Vast outbid, RunPod spot exit): each must end with
every rental destroyed and confirmed, nothing the engine wrote lost, and — where the job can go on — the LoRA
finished and verified on another rental. Real sshd instances, the real engine, the fake provider APIs; the
interruptions are injected at named points (the engine held at a checkpoint, a phase starting, an upload
mid-file), never by racing a poll."""

from __future__ import annotations

import contextlib
import json
import sys

import pytest
from support.cloud import tiny_job
from support.engine_hold import CACHING, GRID, held_at, hold_at, hold_call_at, state_point
from support.interrupter import Interrupter, patch_monitor

from lorarun.provider_adapters import retry
from lorarun.runner.cli.app import main
from lorarun.runner.price.budget import SpendTracker
from lorarun.runner.run import connect, finish, interruption, resume_state, upload, wait
from lorarun.runner.state import JobStore
from lorarun.sshlink.session import RetryPolicy

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

FAST_DESTROY = retry.RetryPolicy(max_attempts=12, base_delay=0.05, max_delay=0.2, max_total=30.0)
SPOT = "  interruptible: prefer"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    # Same code paths, shorter waits: the reconnect after the container stopped is not what is under test.
    monkeypatch.setattr(connect, "PROVIDER_OPTIONS", {"destroy_policy": FAST_DESTROY})
    monkeypatch.setattr(connect, "SSH_RETRY", RetryPolicy(attempts=3, base_delay=0.2, factor=2.0, max_delay=1.0))


def submit(job) -> int:
    return main(["submit", str(job), "--yes"])


def only_state():
    (state,) = JobStore().all()
    return state


def log_of(state) -> list[dict]:
    return interruption.read_log(JobStore().job_dir(state.job_id))


def assert_finished_after(cloud, tmp_path, interrupted: int):
    state = only_state()
    assert state.phase == "done" and state.instance_destroyed, state.message
    assert cloud.instance_ids() == []
    assert len(log_of(state)) == interrupted
    for entry in log_of(state):
        assert not cloud.host.alive(entry["instance_id"])
    out = tmp_path / "out"
    assert (out / "e2e_lora.safetensors").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["verified"] is True and report["outcome"] == "finished", json.dumps(report, indent=1)[:3000]
    events = [json.loads(x) for x in (JobStore().job_dir(state.job_id) / "events.jsonl").read_text().splitlines()]
    total = next(e["total_steps"] for e in events if e["event"] == "started")
    assert max(e["step"] for e in events if e["event"] == "step") == total  # the uninterrupted step count
    assert all(e["total_steps"] == total for e in events if e["event"] == "started")


# ---- in training, on each provider ------------------------------------------------------------------------------
def test_interrupted_in_training_resumes_on_another_rental(cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject(f"{cloud.name} takes the machine back mid-training", "resumed from the last checkpoint, finished")
    job = tiny_job(tmp_path, cloud.name, epochs=3, extra_resources=SPOT)
    patch_monitor(monkeypatch, Interrupter(cloud, tmp_path, [2]))
    assert submit(job) == 0, capsys.readouterr().err
    assert_finished_after(cloud, tmp_path, 1)
    assert log_of(only_state())[0]["step"] == 2


def test_spot_pod_gone_from_the_api_is_an_interruption(runpod_cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject("RunPod spot pod exits and disappears from the API (404)", "resumed, finished")
    job = tiny_job(tmp_path, "runpod", epochs=3, extra_resources=SPOT)
    patch_monitor(monkeypatch, Interrupter(runpod_cloud, tmp_path, [2], gone=True))
    assert submit(job) == 0, capsys.readouterr().err
    assert_finished_after(runpod_cloud, tmp_path, 1)
    assert log_of(only_state())[0]["reason"] == "gone at the provider"


def test_interrupted_twice_in_a_row(cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject(f"{cloud.name}: interrupted at step 2", "resumed")
    fault.inject(f"{cloud.name}: the next rental interrupted at step 4", "resumed again, finished")
    job = tiny_job(tmp_path, cloud.name, epochs=3, extra_resources=SPOT)
    patch_monitor(monkeypatch, Interrupter(cloud, tmp_path, [2, 4]))
    assert submit(job) == 0, capsys.readouterr().err
    assert_finished_after(cloud, tmp_path, 2)


# ---- during boot and upload -------------------------------------------------------------------------------------
def test_interrupted_during_boot_rents_the_next_offer(cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject(f"{cloud.name} takes the machine back while it boots", "destroyed, next offer, finished")
    job = tiny_job(tmp_path, cloud.name, epochs=1, extra_resources=SPOT)
    original = wait.wait_ready
    taken: list[str] = []

    def wait_ready(ctx):
        if not taken:
            taken.append(ctx.rental.instance.id)
            cloud.fake.interrupt(ctx.rental.instance.id)
        return original(ctx)

    monkeypatch.setattr(wait, "wait_ready", wait_ready)
    assert submit(job) == 0, capsys.readouterr().err
    state = only_state()
    assert state.phase == "done" and state.instance_destroyed and state.instance_id != taken[0]
    assert cloud.instance_ids() == [] and not cloud.host.alive(taken[0])
    assert (tmp_path / "out" / "e2e_lora.safetensors").is_file()


def test_interrupted_during_upload_resumes_on_another_rental(cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject(f"{cloud.name} takes the machine back mid-upload", "destroyed, uploaded again elsewhere, finished")
    job = tiny_job(tmp_path, cloud.name, epochs=1, images=12, extra_resources=SPOT)
    original = upload.transfer_bar
    taken: list[str] = []

    @contextlib.contextmanager
    def interrupting_bar(description):
        with original(description) as progress:

            def update(done, total):
                progress(done, total)
                if not taken and 0 < done < total:
                    taken.append(only_state().instance_id)
                    cloud.fake.interrupt(taken[0])

            yield update

    monkeypatch.setattr(upload, "transfer_bar", interrupting_bar)
    assert submit(job) == 0, capsys.readouterr().err
    assert taken, "the upload finished before the interruption point"
    assert_finished_after(cloud, tmp_path, 1)
    assert log_of(only_state())[0]["instance_id"] == taken[0]


# ---- limits -----------------------------------------------------------------------------------------------------
def test_max_interruptions_reached_stops_with_the_checkpoints_home(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject("outbid with max_interruptions 0", "no re-rent, checkpoints home, destroyed, exit 1")
    job = tiny_job(tmp_path, "vastai", epochs=3, extra_resources=SPOT + "\n  max_interruptions: 0")
    patch_monitor(monkeypatch, Interrupter(vast_cloud, tmp_path, [2]))
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 1 and "max_interruptions" in err, err
    state = only_state()
    assert state.phase == "failed" and state.instance_destroyed
    assert vast_cloud.instance_ids() == []
    assert (tmp_path / "out" / "e2e_lora-000001.safetensors").is_file()


def test_budget_reached_when_resuming_stops_instead_of_renting(cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject(f"{cloud.name}: interrupted when the spend is near max_cost", "no re-rent, exit 1, destroyed")
    job = tiny_job(tmp_path, cloud.name, epochs=3, extra_resources=SPOT + "\n  max_cost: 2.0")
    # The interrupted rental turns out to have cost nearly all of max_cost (its spend, read once it is destroyed,
    # is $1.999), so the rest of the job on the next offer would go over it.
    real_spent = SpendTracker.spent
    destroyed = {"yes": False}
    monkeypatch.setattr(SpendTracker, "spent", lambda self: 1.999 if destroyed["yes"] else real_spent(self))
    real_destroy = interruption.destroy_and_confirm

    def destroy_and_confirm(*args, **kwargs):
        result = real_destroy(*args, **kwargs)
        destroyed["yes"] = True
        return result

    monkeypatch.setattr(interruption, "destroy_and_confirm", destroy_and_confirm)
    patch_monitor(monkeypatch, Interrupter(cloud, tmp_path, [2]))
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 1 and "max_cost" in err, err
    state = only_state()
    assert state.instance_destroyed and cloud.instance_ids() == []
    assert len(log_of(state)) == 1 and state.instance_id == log_of(state)[0]["instance_id"]  # nothing rented after
    assert (tmp_path / "out" / "e2e_lora-000001.safetensors").is_file()


# ---- while caching, rendering the grid, pulling the final outputs -------------------------------------------------
def _interrupt_when_held(
    cloud, tmp_path, point: str, monkeypatch, taken: list[str], state_step: int | None = None
) -> None:
    """Interrupt once the engine is held in the call (and, with `state_step`, once that step's state is home)."""

    def hook(monitor):
        iid = only_state().instance_id
        home = resume_state.home_state(JobStore().job_dir(only_state().job_id))
        if state_step is not None and (home is None or home[1]["global_step"] != state_step):
            return
        if not taken and held_at(tmp_path, iid, point):
            taken.append(iid)
            cloud.fake.interrupt(iid)

    patch_monitor(monkeypatch, hook)


def test_interrupted_while_caching_starts_again_elsewhere(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject("outbid while the engine caches latents", "nothing to resume: fresh start elsewhere, finished")
    job = tiny_job(tmp_path, "vastai", epochs=1, extra_resources=SPOT)
    hold_call_at(vast_cloud, tmp_path, CACHING)
    taken: list[str] = []
    _interrupt_when_held(vast_cloud, tmp_path, CACHING, monkeypatch, taken)
    assert submit(job) == 0, capsys.readouterr().err
    assert taken, "the engine never reached the caching hold"
    assert_finished_after(vast_cloud, tmp_path, 1)
    assert log_of(only_state())[0]["step"] == 0


def test_interrupted_while_rendering_the_grid_saves_again_elsewhere(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject("outbid while the engine renders the final grid", "resumed at the last step, grid made, finished")
    job = tiny_job(tmp_path, "vastai", epochs=2, extra_resources=SPOT)
    hold_call_at(vast_cloud, tmp_path, GRID)
    taken: list[str] = []
    _interrupt_when_held(vast_cloud, tmp_path, GRID, monkeypatch, taken, state_step=4)
    assert submit(job) == 0, capsys.readouterr().err
    assert taken, "the engine never reached the grid hold"
    assert_finished_after(vast_cloud, tmp_path, 1)
    assert log_of(only_state())[0]["step"] == 4  # the final step's state was home
    assert (tmp_path / "out" / "e2e_lora_grid.png").is_file()


def test_interrupted_during_the_final_pull_resumes_and_pulls_again(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject("outbid as the final pull starts", "resumed at the last step elsewhere, outputs home, finished")
    job = tiny_job(tmp_path, "vastai", epochs=2, extra_resources=SPOT)
    original = finish.bring_home
    taken: list[str] = []

    def bring_home(*args, **kwargs):
        if not taken:
            taken.append(only_state().instance_id)
            vast_cloud.fake.interrupt(taken[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(finish, "bring_home", bring_home)
    assert submit(job) == 0, capsys.readouterr().err
    assert_finished_after(vast_cloud, tmp_path, 1)
    assert log_of(only_state())[0]["instance_id"] == taken[0]


# ---- while the laptop is detached -------------------------------------------------------------------------------
def test_interrupted_while_detached_attach_resumes_on_another_rental(cloud, tmp_path, monkeypatch, capsys, fault):
    fault.inject(
        f"{cloud.name} takes the machine back while the laptop is detached",
        "attach: destroyed and confirmed, resumed on another rental from the state home, finished",
    )
    job = tiny_job(tmp_path, cloud.name, epochs=3, extra_resources=SPOT)
    hold_at(cloud, tmp_path, [2, None])  # the first rental's engine stops once step 2's state exists
    detached: list[str] = []

    def ctrl_c_once_step_2_is_home(monitor):
        state = only_state()
        if detached or not held_at(tmp_path, state.instance_id, state_point(2)):
            return
        home = resume_state.home_state(JobStore().job_dir(state.job_id))
        if home is not None and home[1]["global_step"] == 2:
            detached.append(state.instance_id)
            raise KeyboardInterrupt

    patch_monitor(monkeypatch, ctrl_c_once_step_2_is_home)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    from rich.prompt import Prompt

    monkeypatch.setattr(Prompt, "ask", classmethod(lambda cls, *a, **k: "detach"))
    assert submit(job) == 0, capsys.readouterr().err
    assert "lorarun attach" in capsys.readouterr().err
    state = only_state()
    (taken,) = detached
    assert state.interruptible and not state.instance_destroyed and cloud.instance_ids() == [taken]

    # Nobody watches: the provider stops the machine, its container (agent, lease watchdog, engine) ends with it.
    cloud.fake.interrupt(taken)
    assert not cloud.host.alive(taken)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    code = main(["attach", state.job_id])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "while lorarun was detached" in err and "resuming from step 2" in err
    assert_finished_after(cloud, tmp_path, 1)
    state = only_state()
    (entry,) = log_of(state)
    assert entry["instance_id"] == taken and entry["step"] == 2 and state.instance_id != taken
    events = [json.loads(x) for x in (JobStore().job_dir(state.job_id) / "events.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["event"] == "started"]
    assert len(starts) == 2 and starts[1]["resume_from_step"] == 2
    # Both rentals destroyed and confirmed at the provider: the interrupted one by attach, the new one at the end.
    destroyed = {r.path.rstrip("/").rsplit("/", 1)[-1] for r in cloud.fake.requests if r.method == "DELETE"}
    assert {taken, state.instance_id} <= destroyed
    assert (tmp_path / "out" / "e2e_lora-000001.safetensors").is_file()  # the first rental's checkpoint, kept
