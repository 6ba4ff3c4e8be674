"""The agent's lifecycle under a fake clock, with a real (tiny) engine process and a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lorarun.image import agent as agent_mod
from lorarun.image.agent import Agent, AgentConfig, HttpResult, SelfDestruct

from .conftest import T0, FakeClock, make_config, names, read_events

KEY = "instance-key-s3cr3t-0123456789"
VAST_LIKE = SelfDestruct("DELETE", "{base}/api/v0/instances/{{instance_id}}/", "CONTAINER_ID", "CONTAINER_API_KEY")


def vast_like(base_url: str) -> SelfDestruct:
    return SelfDestruct(VAST_LIKE.method, VAST_LIKE.url.format(base=base_url), VAST_LIKE.id_env, VAST_LIKE.key_env)


def status(job_dir: Path) -> dict:
    return json.loads((job_dir / "status.json").read_text())


def engine_started(config: AgentConfig):
    return lambda: "started" in names(read_events(config.output_dir))


def make_agent(tmp_path: Path, config: AgentConfig, clock: FakeClock, **kwargs) -> Agent:
    kwargs.setdefault("environ", {})
    kwargs.setdefault("proc_environ", tmp_path / "no-such-environ")
    return Agent(tmp_path / "job", config, clock=clock, **kwargs)


def assert_no_secret(tmp_path: Path, caplog) -> None:
    for path in (tmp_path / "job").rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), f"the instance key leaked into {path}"
    assert KEY not in caplog.text


# -- normal finish -----------------------------------------------------------------------------------------------------
def test_engine_finishes_controller_collects_agent_exits(tmp_path, http_server):
    config = make_config(tmp_path, "finish", self_destruct=vast_like(http_server.url))
    clock = FakeClock()
    job_dir = tmp_path / "job"
    seen_phases = []

    def controller(c: FakeClock) -> None:
        phase = status(job_dir)["phase"]
        seen_phases.append(phase)
        if phase == "grace":  # the controller pulled the outputs
            (job_dir / "collected").write_text("")

    clock.on_sleep = controller
    agent = make_agent(tmp_path, config, clock, environ={"CONTAINER_ID": "1", "CONTAINER_API_KEY": KEY})

    assert agent.run() == 0

    st = status(job_dir)
    assert (st["phase"], st["outcome"], st["engine_exit_code"]) == ("finished", "finished", 0)
    assert st["lease_deadline"] == config.lease_deadline and st["grace_until"] is None
    assert "training" in seen_phases and "grace" in seen_phases
    assert (job_dir / "agent.pid").read_text().strip() == str(os.getpid())
    events = read_events(config.output_dir)
    assert names(events)[0] == "agent_started"
    assert names(events)[-1] == "engine_exited" and events[-1]["outcome"] == "finished"
    assert {"started", "step", "finished"} <= set(names(events))
    assert "fake engine: started" in (job_dir / "engine.log").read_text()
    assert http_server.requests == []  # collected in time: nothing destroyed


def test_stale_collected_marker_from_an_earlier_run_is_ignored(tmp_path):
    config = make_config(tmp_path, "finish", grace_seconds=50)
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "collected").write_text("")
    clock = FakeClock()

    assert make_agent(tmp_path, config, clock).run() == 0

    # It waited the whole grace window instead of leaving at once.
    assert status(tmp_path / "job")["message"].startswith("grace window over")


def test_failed_engine_without_self_destruct_exits_after_grace(tmp_path, http_server):
    config = make_config(tmp_path, "fail", grace_seconds=120)
    clock = FakeClock()

    assert make_agent(tmp_path, config, clock).run() == 0

    st = status(tmp_path / "job")
    assert (st["phase"], st["outcome"], st["engine_exit_code"]) == ("failed", "failed", 3)
    exited = next(e for e in read_events(config.output_dir) if e["event"] == "engine_exited")
    assert clock.t - exited["t"] >= 120  # the grace window was honoured
    assert "self_destroy" not in names(read_events(config.output_dir))
    assert "fake engine: failing" in (tmp_path / "job" / "engine.log").read_text()


# -- lease -------------------------------------------------------------------------------------------------------------
def test_lease_expiry_stops_engine_then_self_destroys_after_grace(tmp_path, http_server, caplog):
    caplog.set_level(logging.DEBUG)
    env_report = tmp_path / "engine_env.json"
    config = make_config(tmp_path, "hang", "--env-report", str(env_report), lease_deadline=T0 + 100,
                         grace_seconds=300, self_destruct=vast_like(http_server.url))
    clock = FakeClock()
    clock.gate = engine_started(config)

    rc = make_agent(tmp_path, config, clock, environ={"CONTAINER_ID": "777", "CONTAINER_API_KEY": KEY}).run()

    assert rc == 0
    events = read_events(config.output_dir)
    order = names(events)
    assert order.index("lease_expired") < order.index("stopped") < order.index("engine_exited") < order.index(
        "self_destroy")
    lease = events[order.index("lease_expired")]
    assert T0 + 100 <= lease["t"] < T0 + 102
    exited = events[order.index("engine_exited")]
    assert (exited["exit_code"], exited["outcome"]) == (0, "lease_expired")
    assert (Path(config.output_dir) / "last.safetensors").exists()  # the engine saved its checkpoint
    destroy = events[order.index("self_destroy")]
    assert destroy["ok"] is True and destroy["t"] >= exited["t"] + 300
    assert [(r.method, r.path, r.authorization) for r in http_server.requests] == [
        ("DELETE", "/api/v0/instances/777/", f"Bearer {KEY}")]
    st = status(tmp_path / "job")
    assert (st["phase"], st["outcome"]) == ("self_destroying", "lease_expired")
    assert "CONTAINER_API_KEY" not in json.loads(env_report.read_text())  # the engine never saw the key
    assert_no_secret(tmp_path, caplog)


def test_lease_already_past_at_start_never_starts_the_engine(tmp_path):
    config = make_config(tmp_path, "finish", lease_deadline=T0 - 1, grace_seconds=10)

    assert make_agent(tmp_path, config, FakeClock()).run() == 0

    events = read_events(config.output_dir)
    assert names(events) == ["agent_started", "lease_expired"]
    assert events[1]["engine_started"] is False
    st = status(tmp_path / "job")
    assert st["engine_pid"] is None and st["phase"] == "lease_expired"


def test_engine_that_cannot_start_is_a_failure_and_still_self_destructs(tmp_path, http_server):
    config = make_config(tmp_path, "finish", engine_command=(str(tmp_path / "no-such-python"), "-m", "x"),
                         grace_seconds=30, self_destruct=vast_like(http_server.url))

    rc = make_agent(tmp_path, config, FakeClock(), environ={"CONTAINER_ID": "4", "CONTAINER_API_KEY": KEY}).run()

    assert rc == 0
    exited = next(e for e in read_events(config.output_dir) if e["event"] == "engine_exited")
    assert exited["outcome"] == "failed" and "could not start the engine" in exited["error"]
    assert [r.path for r in http_server.requests] == ["/api/v0/instances/4/"]


def test_agent_bug_while_training_stops_engine_and_keeps_guarding(tmp_path, http_server):
    config = make_config(tmp_path, "hang", grace_seconds=30, self_destruct=vast_like(http_server.url))
    clock = FakeClock()
    clock.gate = engine_started(config)
    raised = []

    def broken(c: FakeClock) -> None:
        if not raised and status(tmp_path / "job")["phase"] == "training" and clock.gate():
            raised.append(True)
            raise RuntimeError("bug in the supervision loop")

    clock.on_sleep = broken

    rc = make_agent(tmp_path, config, clock, environ={"CONTAINER_ID": "6", "CONTAINER_API_KEY": KEY}).run()

    assert rc == 0
    events = read_events(config.output_dir)
    assert "stopped" in names(events)  # the engine was stopped cleanly, its checkpoint saved
    exited = next(e for e in events if e["event"] == "engine_exited")
    assert exited["outcome"] == "failed" and "bug in the supervision loop" in exited["error"]
    assert len(http_server.requests) == 1  # nobody collected: the instance still went away


def test_engine_ignoring_sigterm_is_killed_after_stop_timeout(tmp_path):
    config = make_config(tmp_path, "hang", "--ignore-term", lease_deadline=T0 + 10, grace_seconds=0,
                         stop_timeout=30)
    clock = FakeClock()
    clock.gate = engine_started(config)

    assert make_agent(tmp_path, config, clock).run() == 0

    exited = next(e for e in read_events(config.output_dir) if e["event"] == "engine_exited")
    assert exited["exit_code"] == -9 and exited["outcome"] == "lease_expired"
    assert exited["t"] >= T0 + 10 + 30


# -- heartbeat ---------------------------------------------------------------------------------------------------------
def test_heartbeat_extends_grace_but_not_lease(tmp_path, http_server):
    config = make_config(tmp_path, "hang", lease_deadline=T0 + 100, grace_seconds=50,
                         self_destruct=vast_like(http_server.url))
    clock = FakeClock()
    clock.gate = engine_started(config)
    heartbeat = tmp_path / "job" / "heartbeat"
    beat_until = T0 + 400  # an attached controller, beating until then, then the laptop dies
    beats = []

    def controller(c: FakeClock) -> None:
        if c.t <= beat_until:
            heartbeat.touch()
            os.utime(heartbeat, (c.t, c.t))
            beats.append(c.t)

    clock.on_sleep = controller
    agent = make_agent(tmp_path, config, clock, environ={"CONTAINER_ID": "5", "CONTAINER_API_KEY": KEY})

    assert agent.run() == 0

    events = read_events(config.output_dir)
    lease = next(e for e in events if e["event"] == "lease_expired")
    assert lease["t"] < T0 + 102  # heartbeats never pushed the lease
    destroy = next(e for e in events if e["event"] == "self_destroy")
    assert beats[-1] > beat_until - 2
    # ...but they held the grace window open (event times are rounded to ms)
    assert beats[-1] + 50 - 0.01 <= destroy["t"] < beats[-1] + 50 + 2
    assert len(http_server.requests) == 1


def test_heartbeat_from_the_future_does_not_hold_the_instance_forever(tmp_path):
    config = make_config(tmp_path, "fail", grace_seconds=20)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "heartbeat").touch()
    os.utime(job_dir / "heartbeat", (T0 + 10**9, T0 + 10**9))
    clock = FakeClock()
    clock.on_sleep = lambda c: c.t < T0 + 10_000 or pytest.fail("a future heartbeat kept the agent alive")

    assert make_agent(tmp_path, config, clock).run() == 0


# -- environment from /proc/1/environ ---------------------------------------------------------------------------------
def test_self_destruct_reads_id_and_key_from_proc_environ(tmp_path, http_server, caplog):
    caplog.set_level(logging.DEBUG)
    proc_environ = tmp_path / "environ"
    proc_environ.write_bytes(b"PATH=/usr/bin\0CONTAINER_ID=9001\0CONTAINER_API_KEY=" + KEY.encode() + b"\0EMPTY=\0")
    config = make_config(tmp_path, "fail", grace_seconds=5, self_destruct=vast_like(http_server.url))

    rc = make_agent(tmp_path, config, FakeClock(), environ={}, proc_environ=proc_environ).run()

    assert rc == 0
    assert [(r.method, r.path, r.authorization) for r in http_server.requests] == [
        ("DELETE", "/api/v0/instances/9001/", f"Bearer {KEY}")]
    assert_no_secret(tmp_path, caplog)


def test_read_proc_environ_parses_nul_separated_entries(tmp_path):
    path = tmp_path / "environ"
    path.write_bytes(b"A=1\0B=x=y\0NOEQUALS\0\0C=\0")
    assert agent_mod.read_proc_environ(path) == {"A": "1", "B": "x=y", "C": ""}
    assert agent_mod.read_proc_environ(tmp_path / "missing") == {}


def test_environment_wins_over_proc_environ(tmp_path):
    path = tmp_path / "environ"
    path.write_bytes(b"X=from-proc\0Y=only-proc\0")
    assert agent_mod.lookup_env("X", {"X": "from-env"}, path) == "from-env"
    assert agent_mod.lookup_env("Y", {}, path) == "only-proc"
    assert agent_mod.lookup_env("Z", {}, path) is None


# -- self-destruct retries ---------------------------------------------------------------------------------------------
def test_self_destruct_retries_rate_limits_and_server_errors_with_backoff(tmp_path, http_server):
    http_server.statuses = [429, 503]
    config = make_config(tmp_path, "fail", grace_seconds=0, self_destruct=vast_like(http_server.url))
    clock = FakeClock()

    rc = make_agent(tmp_path, config, clock, environ={"CONTAINER_ID": "3", "CONTAINER_API_KEY": KEY}).run()

    assert rc == 0
    assert len(http_server.requests) == 3
    assert clock.sleeps[-2:] == [2.0, 4.0]
    destroy = next(e for e in read_events(config.output_dir) if e["event"] == "self_destroy")
    assert destroy["ok"] is True and destroy["attempts"] == 3


def test_self_destruct_gives_up_at_once_on_a_rejected_key(tmp_path, http_server):
    http_server.statuses = [401]
    config = make_config(tmp_path, "fail", grace_seconds=0, self_destruct=vast_like(http_server.url))

    rc = make_agent(tmp_path, config, FakeClock(), environ={"CONTAINER_ID": "3", "CONTAINER_API_KEY": KEY}).run()

    assert rc == 1
    assert len(http_server.requests) == 1
    destroy = next(e for e in read_events(config.output_dir) if e["event"] == "self_destroy")
    assert destroy["ok"] is False and "401" in destroy["error"]
    assert status(tmp_path / "job")["message"].startswith("self-destruct failed")


def test_self_destruct_without_instance_key_fails_loudly_without_calling(tmp_path, http_server):
    config = make_config(tmp_path, "fail", grace_seconds=0, self_destruct=vast_like(http_server.url))

    rc = make_agent(tmp_path, config, FakeClock(), environ={"CONTAINER_ID": "3"}).run()

    assert rc == 1 and http_server.requests == []
    assert "CONTAINER_API_KEY not set" in status(tmp_path / "job")["message"]


def test_self_destruct_treats_not_found_as_done_and_redacts_the_key(tmp_path):
    calls = []

    def http(method, url, headers):
        calls.append((method, url))
        return HttpResult(404, "gone")

    config = make_config(tmp_path, "fail", grace_seconds=0,
                         self_destruct=SelfDestruct("POST", "https://api.example/v2/pods/{instance_id}/stop",
                                                    "RUNPOD_POD_ID", "RUNPOD_API_KEY"))
    rc = make_agent(tmp_path, config, FakeClock(), http=http,
                    environ={"RUNPOD_POD_ID": "ab c/d", "RUNPOD_API_KEY": KEY}).run()
    assert rc == 0
    assert calls == [("POST", "https://api.example/v2/pods/ab%20c%2Fd/stop")]  # the id is quoted into the path

    assert agent_mod._redact(f"bad key {KEY}", KEY) == "bad key ***"


@pytest.mark.parametrize(("status_code", "verdict"), [
    (200, "done"), (204, "done"), (404, "done"), (None, "retry"), (429, "retry"), (500, "retry"), (502, "retry"),
    (400, "give_up"), (401, "give_up"), (403, "give_up")])
def test_destroy_outcome(status_code, verdict):
    assert agent_mod.destroy_outcome(HttpResult(status_code, "")) == verdict


# -- against the fake Vast API, with the key it issues ----------------------------------------------------------------
def test_self_destruct_against_fake_vast_with_its_instance_key(tmp_path):
    from lorarun.provider_adapters.vastai import VastProvider
    from tests.fakes.vast_server import API_KEY, FakeVast

    with FakeVast() as fake:
        import urllib.request
        req = urllib.request.Request(f"{fake.url}/api/v0/asks/1001/", method="PUT",
                                     data=json.dumps({"image": "lorarun:test", "disk": 20}).encode(),
                                     headers={"Authorization": f"Bearer {API_KEY}",
                                              "Content-Type": "application/json"})
        created = json.loads(urllib.request.urlopen(req, timeout=10).read())
        instance_id, instance_key = str(created["new_contract"]), created["instance_api_key"]
        assert instance_id in fake.live_ids()

        how = VastProvider(API_KEY, base_url=fake.url).self_destruct()
        config = make_config(tmp_path, "fail", grace_seconds=1, self_destruct=how)
        proc_environ = tmp_path / "environ"  # as Vast injects it into the container's first process (§1.7)
        proc_environ.write_bytes(f"CONTAINER_ID={instance_id}\0CONTAINER_API_KEY={instance_key}\0".encode())

        assert make_agent(tmp_path, config, FakeClock(), proc_environ=proc_environ).run() == 0

        assert instance_id not in fake.live_ids()
        assert int(instance_id) in fake.destroyed
        deletes = fake.requests_to("DELETE", "/api/v0/instances/")
        assert [r.token() for r in deletes] == [instance_key]  # the instance's own key, never the user's


def fallback_script(tmp_path: Path, exit_code: int) -> tuple[str, ...]:
    """A stand-in for `runpodctl remove pod <id>`: records its argv and whether it saw the key, never the key."""
    script = tmp_path / "providerctl.py"
    script.write_text(
        "import json, os, sys\n"
        f"open({str(tmp_path / 'fallback.json')!r}, 'w').write(json.dumps({{'argv': sys.argv[1:], "
        "'has_key': os.environ.get('RUNPOD_API_KEY') == " + repr(KEY) + ", "
        "'pod': os.environ.get('RUNPOD_POD_ID')}))\n"
        f"sys.exit({exit_code})\n")
    return (sys.executable, str(script), "remove", "pod", "{instance_id}")


RUNPOD_LIKE = "RUNPOD_POD_ID", "RUNPOD_API_KEY"


def test_fallback_command_runs_when_the_api_refuses(tmp_path, http_server):
    http_server.statuses = [403]
    how = SelfDestruct("DELETE", http_server.url + "/v2/pods/{instance_id}", *RUNPOD_LIKE)
    config = make_config(tmp_path, "fail", grace_seconds=0, self_destruct=how,
                         self_destruct_fallback=fallback_script(tmp_path, 0))

    rc = make_agent(tmp_path, config, FakeClock(), environ={"RUNPOD_POD_ID": "pod9", "RUNPOD_API_KEY": KEY}).run()

    assert rc == 0 and len(http_server.requests) == 1
    assert json.loads((tmp_path / "fallback.json").read_text()) == {
        "argv": ["remove", "pod", "pod9"], "has_key": True, "pod": "pod9"}
    destroy = next(e for e in read_events(config.output_dir) if e["event"] == "self_destroy")
    assert (destroy["ok"], destroy["via"]) == (True, "command")


def test_failing_fallback_is_reported_with_both_reasons(tmp_path, http_server, caplog):
    http_server.statuses = [401]
    how = SelfDestruct("DELETE", http_server.url + "/v2/pods/{instance_id}", *RUNPOD_LIKE)
    config = make_config(tmp_path, "fail", grace_seconds=0, self_destruct=how,
                         self_destruct_fallback=fallback_script(tmp_path, 2))

    rc = make_agent(tmp_path, config, FakeClock(), environ={"RUNPOD_POD_ID": "pod9", "RUNPOD_API_KEY": KEY}).run()

    assert rc == 1
    message = status(tmp_path / "job")["message"]
    assert "HTTP 401" in message and "fallback command: exit 2" in message
    assert_no_secret(tmp_path, caplog)


def test_fallback_command_runs_even_without_the_key(tmp_path, http_server):
    how = SelfDestruct("DELETE", http_server.url + "/v2/pods/{instance_id}", *RUNPOD_LIKE)
    config = make_config(tmp_path, "fail", grace_seconds=0, self_destruct=how,
                         self_destruct_fallback=fallback_script(tmp_path, 0))

    assert make_agent(tmp_path, config, FakeClock(), environ={"RUNPOD_POD_ID": "pod9"}).run() == 0

    assert http_server.requests == []  # no key, no request
    assert json.loads((tmp_path / "fallback.json").read_text())["has_key"] is False


def test_self_destruct_against_fake_runpod_with_the_pod_scoped_key(tmp_path):
    from lorarun.provider_adapters.runpod import RunPodProvider
    from tests.fakes.runpod_server import API_KEY, FakeRunPod

    with FakeRunPod() as fake:
        import urllib.request
        gpu_id = next(iter(fake.gpu_types))
        body = {"name": "lorarun-job42", "image": "lorarun:test", "gpu": {"id": gpu_id, "count": 1}}
        req = urllib.request.Request(f"{fake.url}/v2/pods", method="POST", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        pod_id = json.loads(urllib.request.urlopen(req, timeout=10).read())["id"]
        pod_key = fake.pods[pod_id].pod_key

        how = RunPodProvider(API_KEY, rest_url=fake.url, graphql_url=fake.url + "/graphql").self_destruct()
        config = make_config(tmp_path, "fail", grace_seconds=1, self_destruct=how)
        proc_environ = tmp_path / "environ"  # RunPod's variables may be missing in SSH sessions (§2.7)
        proc_environ.write_bytes(f"RUNPOD_POD_ID={pod_id}\0RUNPOD_API_KEY={pod_key}\0".encode())

        assert make_agent(tmp_path, config, FakeClock(), proc_environ=proc_environ).run() == 0

        assert pod_id not in fake.live_ids() and pod_id in fake.destroyed
        assert [r.token() for r in fake.requests_to("DELETE", "/v2/pods/")] == [pod_key]


# -- stop requests -----------------------------------------------------------------------------------------------------
def test_stop_request_is_forwarded_to_the_engine_and_skips_grace(tmp_path, http_server):
    config = make_config(tmp_path, "hang", self_destruct=vast_like(http_server.url))
    clock = FakeClock()
    holder = {}

    def controller(c: FakeClock) -> None:
        if "started" in names(read_events(config.output_dir)):
            holder["agent"].request_stop()  # what the SIGTERM handler does

    clock.on_sleep = controller
    holder["agent"] = agent = make_agent(tmp_path, config, clock,
                                         environ={"CONTAINER_ID": "1", "CONTAINER_API_KEY": KEY})

    assert agent.run() == 0

    events = read_events(config.output_dir)
    assert "stopped" in names(events)  # the engine got SIGTERM and saved its checkpoint
    exited = next(e for e in events if e["event"] == "engine_exited")
    assert (exited["exit_code"], exited["outcome"]) == (0, "stopped")
    st = status(tmp_path / "job")
    assert (st["phase"], st["outcome"]) == ("stopped", "stopped")
    assert http_server.requests == []  # a clean stop never destroys: the controller owns teardown


def test_engine_stopped_by_someone_else_is_stopped_but_still_waits_for_collection(tmp_path):
    config = make_config(tmp_path, "hang")
    clock = FakeClock()
    job_dir = tmp_path / "job"
    phases = []

    def outsider(c: FakeClock) -> None:  # e.g. `docker stop` signalling every process in the container, once
        st = status(job_dir)
        phases.append(st["phase"])
        if "signalled" not in phases and "started" in names(read_events(config.output_dir)):
            phases.append("signalled")
            os.kill(st["engine_pid"], signal.SIGTERM)
        if st["phase"] == "grace":
            (job_dir / "collected").write_text("")

    clock.on_sleep = outsider

    assert make_agent(tmp_path, config, clock).run() == 0

    st = status(job_dir)
    assert (st["phase"], st["outcome"], st["engine_exit_code"]) == ("stopped", "stopped", 0)
    assert "grace" in phases  # not a stop request to the agent: the outputs still wait for the controller


def test_last_engine_outcome_reads_the_tail_of_events(tmp_path):
    path = tmp_path / "events.jsonl"
    assert agent_mod.last_engine_outcome(path) is None
    lines = [{"event": "started"}, {"event": "stopped"}, {"event": "engine_exited"}]
    path.write_text("x" * 100 + "\n" + "".join(json.dumps(e) + "\n" for e in lines) + '{"event": "fini')
    assert agent_mod.last_engine_outcome(path, tail_bytes=90) == "stopped"


def test_status_is_refreshed_while_training(tmp_path):
    config = make_config(tmp_path, "hang", lease_deadline=T0 + 60, grace_seconds=0)
    clock = FakeClock()
    clock.gate = engine_started(config)
    updates = set()
    clock.on_sleep = lambda c: updates.add(status(tmp_path / "job")["updated"])

    make_agent(tmp_path, config, clock, status_every=10).run()

    during_training = sorted(u for u in updates if T0 < u < T0 + 60)
    assert len(during_training) >= 4  # rewritten about every 10 s, not only on phase changes


# -- config ------------------------------------------------------------------------------------------------------------
def test_agent_config_round_trips_through_json(tmp_path):
    config = make_config(tmp_path, "finish", self_destruct=vast_like("https://console.vast.ai"))
    again = AgentConfig.from_json(config.to_json())
    assert again == config
    data = json.loads(config.to_json())
    assert data["self_destruct"] == {"method": "DELETE", "url": "https://console.vast.ai/api/v0/instances/"
                                     "{instance_id}/", "id_env": "CONTAINER_ID", "key_env": "CONTAINER_API_KEY",
                                     "fallback_command": []}
    assert data["engine_command"][0] == sys.executable and data["heartbeat_file"] == "heartbeat"
    assert AgentConfig.from_json(make_config(tmp_path, "finish").to_json()).self_destruct is None
    with_fallback = make_config(tmp_path, "finish", self_destruct_fallback=("runpodctl", "remove", "pod", "{x}"))
    assert AgentConfig.from_json(with_fallback.to_json()) == with_fallback


@pytest.mark.parametrize(("change", "message"), [
    ({"engine_command": []}, "engine_command"), ({"output_dir": "relative/out"}, "absolute"),
    ({"grace_seconds": -1}, "negative"), ({"job_id": ""}, "job_id"),
    ({"self_destruct": {"method": "DELETE"}}, "self_destruct needs")])
def test_agent_config_rejects_nonsense(tmp_path, change, message):
    data = make_config(tmp_path, "finish").to_dict() | change
    with pytest.raises(ValueError, match=message):
        AgentConfig.from_dict(data)


def test_agent_config_names_missing_fields():
    with pytest.raises(ValueError, match="lease_deadline, output_dir"):
        AgentConfig.from_dict({"job_id": "j", "engine_command": ["x"]})


# -- process tree ------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_process_tree_finds_grandchildren():
    code = "import subprocess,sys,time; p=subprocess.Popen(['sleep','30']); print(p.pid, flush=True); time.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(parent.stdout.readline())
        tree = agent_mod.process_tree(parent.pid)
        assert tree[0] == parent.pid and grandchild in tree
    finally:
        for pid in reversed(agent_mod.process_tree(parent.pid)):
            agent_mod._signal(pid, 9)
        parent.wait()
