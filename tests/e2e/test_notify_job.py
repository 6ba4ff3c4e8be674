"""`notify: {webhook: URL}` through whole fake-provider jobs: a loopback receiver gets every event in order, a
failing webhook never fails the job, and no payload carries a secret."""

from __future__ import annotations

import os

import pytest
from fakes.webhook_server import FakeWebhook
from support.cloud import tiny_job, with_sample

from lorarun.runner.cli.app import main
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def _with_notify(job, url: str, fmt: str = "json", sample: str = "") -> None:
    if sample:
        with_sample(job, sample)
    text = job.read_text(encoding="utf-8")
    job.write_text(text + f"notify:\n  webhook: {url}\n  format: {fmt}\n", encoding="utf-8")


def test_webhook_gets_every_event_of_a_job_in_order(vast_cloud, tmp_path, capsys):
    with FakeWebhook() as hook:
        job = tiny_job(tmp_path, "vastai")
        _with_notify(job, hook.url + "/hooks/job-events")
        code = main(["submit", str(job), "--yes"])
        assert code == 0, capsys.readouterr().err

    events = [r.payload for r in hook.received]
    kinds = [(e["event"], e.get("phase") or e.get("file")) for e in events]
    assert kinds == [
        ("started", None),
        ("phase", "provision"),
        ("phase", "wait"),
        ("phase", "upload"),
        ("phase", "run"),
        ("phase", "monitor"),
        ("checkpoint", "e2e_lora-000001.safetensors"),
        ("phase", "finish"),
        ("checkpoint", "e2e_lora.safetensors"),
        ("phase", "teardown"),
        ("finished", None),
    ], kinds
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    (state,) = JobStore().all()
    assert {e["job_id"] for e in events} == {state.job_id} and {e["job"] for e in events} == {"e2e"}
    assert events[0]["provider"] == "vastai" and events[0]["predicted_cost"] > 0
    assert events[-1]["cost"] >= 0
    home = tmp_path / "out" / "e2e_lora.safetensors"
    import hashlib

    final = next(e for e in events if e.get("file") == "e2e_lora.safetensors")
    assert final["sha256"] == hashlib.sha256(home.read_bytes()).hexdigest()
    secret = os.environ["VAST_API_KEY"].encode()
    assert all(secret not in r.raw for r in hook.received)


def test_failing_discord_webhook_never_fails_the_job(cloud, tmp_path, capsys):
    sample = (
        "sample:\n  prompts: [mychar]\n  steps: 2\n  grid_strengths: [0.0, 1.0]\n  grid_seeds: [1]\n"
        "  every_n_epochs: null\n"
    )
    with FakeWebhook() as hook:
        hook.fail_next("POST", "/api/webhooks", status=500, times=3, body={"message": "500: Internal Server Error"})
        job = tiny_job(tmp_path, cloud.name)
        _with_notify(job, hook.url + "/api/webhooks/1234/s3cr3t-webhook-token", fmt="discord", sample=sample)
        code = main(["submit", str(job), "--yes"])
        err = capsys.readouterr().err
        assert code == 0, err

    assert err.count("notify: the webhook at 127.0.0.1 did not take an event (HTTP 500)") == 1
    assert "s3cr3t-webhook-token" not in err  # the URL's token is never printed
    got = hook.received[3:]  # the first three were answered 500
    assert got and all(r.payload["username"] == "lorarun" and r.payload["content"] for r in got)
    last = got[-1].payload["content"]
    assert last.startswith("**e2e** (") and ": finished — LoRA saved to" in last and "(cost $" in last, last
    final = next(r for r in got if "e2e_lora.safetensors" in r.payload["content"])
    name, data = final.files["files[0]"]
    assert name == "e2e_lora_grid.png" and data == (tmp_path / "out" / "e2e_lora_grid.png").read_bytes()
    assert final.payload["embeds"][0]["image"]["url"] == "attachment://e2e_lora_grid.png"
    key = {"vastai": "VAST_API_KEY", "runpod": "RUNPOD_API_KEY"}[cloud.name]
    assert all(os.environ[key].encode() not in r.raw for r in hook.received)


def test_a_failing_job_tells_the_webhook_why_in_order_and_without_a_secret(vast_cloud, tmp_path, monkeypatch, capsys):
    """The engine dies after the first checkpoint came home: the webhook hears the checkpoint, then the pull and
    teardown, then one `failed` event with the reason and the cost — never `finished`, never a key or token."""
    monkeypatch.setenv("HF_TOKEN", "hf_laptopOnlyToken_0123456789")  # a secret of the laptop the job never needs
    killed: list[int] = []
    poll = JobMonitor.poll

    def poll_then_kill_the_engine(self):
        events = poll(self)
        if not killed and "e2e_lora-000001.safetensors" in self.progress.pulled:
            engine_pid = (self.agent_status() or {}).get("engine_pid")
            assert engine_pid, "the agent did not report the engine's pid"
            killed.append(engine_pid)
            self.transport.run(f"kill -KILL {engine_pid}", check=False)  # a hard crash: no event, no save
        return events

    monkeypatch.setattr(JobMonitor, "poll", poll_then_kill_the_engine)
    with FakeWebhook() as hook:
        job = tiny_job(tmp_path, "vastai", epochs=30)
        _with_notify(job, hook.url + "/hooks/s3cr3t-path-token")
        code = main(["submit", str(job), "--yes"])
        err = capsys.readouterr().err
    assert code == 1 and killed, err

    events = [r.payload for r in hook.received]
    kinds = [(e["event"], e.get("phase") or e.get("file")) for e in events]
    assert kinds[:6] == [
        ("started", None),
        ("phase", "provision"),
        ("phase", "wait"),
        ("phase", "upload"),
        ("phase", "run"),
        ("phase", "monitor"),
    ], kinds
    assert ("checkpoint", "e2e_lora-000001.safetensors") in kinds
    assert kinds[-3:] == [("phase", "finish"), ("phase", "teardown"), ("failed", None)], kinds
    assert not any(kind == "finished" for kind, _ in kinds) and [e["seq"] for e in events] == sorted(
        e["seq"] for e in events
    )
    (state,) = JobStore().all()
    failed = events[-1]
    assert state.phase == "failed" and state.instance_destroyed
    assert "training failed" in failed["message"] and failed["cost"] >= 0, failed
    assert failed["job_id"] == state.job_id and failed["message"] in state.message
    for secret in (os.environ["VAST_API_KEY"], os.environ["HF_TOKEN"], "s3cr3t-path-token"):
        assert all(secret.encode() not in r.raw for r in hook.received), secret
