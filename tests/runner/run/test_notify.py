"""The notify section and the webhook sender without a job: spec errors, Discord detection, secret scrubbing,
and a dead webhook that neither raises nor blocks."""

from __future__ import annotations

import socket

import pytest
from fakes.webhook_server import FakeWebhook

from lorarun.image.schema import ConfigError
from lorarun.runner.job.hosted_spec import NotifyConfig, hub_repo_problem
from lorarun.runner.run.notify import Post, Webhook, discord_payload, environment_secrets, scrub


def test_notify_config_checks_url_and_format():
    NotifyConfig(webhook="https://example.org/hook").validate()
    with pytest.raises(ConfigError, match=r"^notify.webhook: expected an http\(s\) URL"):
        NotifyConfig(webhook="discord.com/api/webhooks/1/x").validate()
    with pytest.raises(ConfigError, match="notify.format: unknown format 'slack'"):
        NotifyConfig(webhook="https://example.org/hook", format="slack").validate()


def test_discord_shape_is_chosen_by_host_unless_told():
    assert NotifyConfig(webhook="https://discord.com/api/webhooks/1/tok").discord
    assert NotifyConfig(webhook="https://discordapp.com/api/webhooks/1/tok").discord
    assert not NotifyConfig(webhook="https://hooks.example.org/x").discord
    assert NotifyConfig(webhook="http://127.0.0.1:9/x", format="discord").discord
    assert not NotifyConfig(webhook="https://discord.com/api/webhooks/1/tok", format="json").discord


def test_secrets_from_the_environment_are_scrubbed_everywhere():
    env = {"VAST_API_KEY": "vast-key-123456", "HF_TOKEN": "hf_abcdefghij", "HOME": "/root", "SHORT_KEY": "abc"}
    secrets = environment_secrets(env)
    assert set(secrets) == {"vast-key-123456", "hf_abcdefghij"}
    payload = {"message": "401 for key vast-key-123456", "list": ["hf_abcdefghij", 3], "n": 1.5}
    assert scrub(payload, secrets) == {"message": "401 for key ***", "list": ["***", 3], "n": 1.5}


def test_discord_payload_never_pings_and_fits_the_limits():
    event = {"event": "failed", "job": "j", "job_id": "j-1", "message": "x" * 5000, "cost": 0.5}
    body = discord_payload(event, None)
    assert body["allowed_mentions"] == {"parse": []} and len(body["content"]) <= 2000
    assert body["embeds"][0]["fields"] == [{"name": "cost", "value": "0.5", "inline": True}]


def test_hub_repo_ids():
    assert hub_repo_problem("me/my-lora") is None and hub_repo_problem(None) is None
    assert "not a Hugging Face repo id" in hub_repo_problem("my-lora")
    assert "not a Hugging Face repo id" in hub_repo_problem("me/../x")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_webhook_is_said_once_and_never_raises(capsys):
    hook = Webhook(NotifyConfig(webhook=f"http://127.0.0.1:{_closed_port()}/tok3n-in-url"))
    for i in range(3):
        hook.send(Post({"event": "phase", "seq": i}))
    hook.close()
    err = capsys.readouterr().err
    assert hook.failures == 3 and err.count("did not take an event (ConnectionError)") == 1
    assert "tok3n-in-url" not in err


def test_webhook_posts_in_order_and_scrubs_its_own_url():
    with FakeWebhook() as fake:
        url = fake.url + "/hook/tok3n"
        hook = Webhook(NotifyConfig(webhook=url), secrets=("sekrit-value",))
        for i in range(5):
            hook.send(Post({"event": "phase", "seq": i, "message": f"at {url} with sekrit-value"}))
        hook.close()
    assert [r.payload["seq"] for r in fake.received] == [0, 1, 2, 3, 4]
    assert all(r.payload["message"] == "at *** with ***" for r in fake.received)


def test_job_events_failed_and_finished_carry_the_cost(tmp_path):
    from types import SimpleNamespace

    from lorarun.runner.run.notify import JobNotifications

    with FakeWebhook() as fake:
        hook = Webhook(NotifyConfig(webhook=fake.url + "/h"))
        run = SimpleNamespace(state=SimpleNamespace(job_id="j-1", name="j"), predicted_cost=0.5)
        notes = JobNotifications({"j-1": hook}, {"j-1": "j"}, spent=lambda: 0.1234567)
        notes.phase(run, "provision", "", provider="vastai", gpu="RTX 4090")
        notes.phase(run, "failed", "training failed: out of GPU memory")
        notes.close()
    events = [r.payload for r in fake.received]
    assert [e["event"] for e in events] == ["started", "phase", "failed"]
    assert events[0]["gpu"] == "RTX 4090" and events[0]["predicted_cost"] == 0.5
    assert events[-1]["message"] == "training failed: out of GPU memory" and events[-1]["cost"] == 0.1235


def test_a_stopped_job_ends_with_a_stopped_event_not_finished():
    from types import SimpleNamespace

    from lorarun.runner.run.notify import JobNotifications

    with FakeWebhook() as fake:
        hook = Webhook(NotifyConfig(webhook=fake.url + "/api/webhooks/1/t", format="discord"))
        run = SimpleNamespace(state=SimpleNamespace(job_id="j-1", name="j"), predicted_cost=0.5)
        notes = JobNotifications({"j-1": hook}, {"j-1": "j"}, spent=lambda: 0.05)
        notes.phase(run, "stopped", "stopped by `lorarun down`")
        notes.close()
    (got,) = fake.received
    assert got.payload["content"] == "**j** (j-1): stopped — stopped by `lorarun down` (cost $0.050)"


def test_discord_rate_limit_is_waited_out_once():
    with FakeWebhook() as fake:
        fake.fail_next("POST", "/api/webhooks", status=429, body={"message": "rate limited", "retry_after": 0.05})
        hook = Webhook(NotifyConfig(webhook=fake.url + "/api/webhooks/1/t", format="discord"))
        hook.send(Post({"event": "finished", "job": "j", "job_id": "j-1", "seq": 1, "cost": 0.2}))
        hook.close()
    assert hook.failures == 0 and len(fake.received) == 1  # the 429 is not recorded as received
    assert (
        fake.received[0].payload["content"] == "**j** (j-1): finished (cost $0.200)"
    )  # money() shows a tenth of a cent


def test_a_sampled_checkpoint_is_announced_with_its_first_sample_once_it_is_home(tmp_path):
    from types import SimpleNamespace

    from lorarun.image.engine_config import SampleConfig
    from lorarun.runner.run.notify import JobNotifications

    out = tmp_path / "out"
    (out / "samples").mkdir(parents=True)
    spec = SimpleNamespace(
        output_dir=out,
        output=SimpleNamespace(name="mychar"),
        sample=SampleConfig(prompts=("mychar, portrait",), every_n_epochs=1),
    )
    run = SimpleNamespace(state=SimpleNamespace(job_id="j-1", name="j"), job=SimpleNamespace(spec=spec))
    for name in ("mychar-000001.safetensors", "mychar-000002.safetensors"):
        (out / name).write_bytes(b"lora")
    pulled = {"mychar-000001.safetensors": "a1", "mychar-000002.safetensors": "a2"}
    with FakeWebhook() as fake:
        hook = Webhook(NotifyConfig(webhook=fake.url + "/api/webhooks/1/t", format="discord"))
        notes = JobNotifications({"j-1": hook}, {"j-1": "j"}, spent=lambda: 0.0)
        notes.outputs_home(run, pulled)  # no sample home yet: both wait, in order
        (out / "samples" / "mychar_e000001_00.png").write_bytes(b"\x89PNG one")
        notes.outputs_home(run, pulled)  # epoch 1's sample is home: epoch 1 goes, epoch 2 still waits
        notes.outputs_home(run, pulled, final=True)  # the end: whatever is home goes, picture or not
        notes.close()
    posted = [(r.payload["content"], r.files) for r in fake.received]
    assert [content.split(": ", 1)[1] for content, _ in posted] == [
        "checkpoint home: mychar-000001.safetensors",
        "checkpoint home: mychar-000002.safetensors",
    ]
    assert posted[0][1] == {"files[0]": ("mychar_e000001_00.png", b"\x89PNG one")} and posted[1][1] == {}
    assert fake.received[0].payload["embeds"][0]["image"] == {"url": "attachment://mychar_e000001_00.png"}
