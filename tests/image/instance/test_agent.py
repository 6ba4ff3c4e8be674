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

from lorarun.image.agent_files import AgentConfig
from lorarun.image.destroy_plan import DestroyPlan, DestroyWay
from lorarun.image.instance import job_folder, processes, self_destroy
from lorarun.image.instance.agent import Agent

from .conftest import T0, FakeClock, make_config, names, read_events

KEY = "instance-key-s3cr3t-0123456789"


def vast_like(base_url: str) -> DestroyPlan:
    """One DELETE, no check (the self-destroy tests with checks and several ways are in test_self_destroy.py)."""
    return DestroyPlan(
        "CONTAINER_ID",
        "CONTAINER_API_KEY",
        (DestroyWay("http", method="DELETE", url=f"{base_url}/api/v0/instances/{{instance_id}}/"),),
    )


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
    config = make_config(
        tmp_path,
        "hang",
        "--env-report",
        str(env_report),
        lease_deadline=T0 + 100,
        grace_seconds=300,
        self_destruct=vast_like(http_server.url),
    )
    clock = FakeClock()
    clock.gate = engine_started(config)

    rc = make_agent(tmp_path, config, clock, environ={"CONTAINER_ID": "777", "CONTAINER_API_KEY": KEY}).run()

    assert rc == 0
    events = read_events(config.output_dir)
    order = names(events)
    assert (
        order.index("lease_expired")
        < order.index("stopped")
        < order.index("engine_exited")
        < order.index("self_destroy")
    )
    lease = events[order.index("lease_expired")]
    assert T0 + 100 <= lease["t"] < T0 + 102
    exited = events[order.index("engine_exited")]
    assert (exited["exit_code"], exited["outcome"]) == (0, "lease_expired")
    assert (Path(config.output_dir) / "last.safetensors").exists()  # the engine saved its checkpoint
    destroy = events[order.index("self_destroy")]
    assert destroy["ok"] is True and destroy["t"] >= exited["t"] + 300
    assert [(r.method, r.path, r.authorization) for r in http_server.requests] == [
        ("DELETE", "/api/v0/instances/777/", f"Bearer {KEY}")
    ]
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
    config = make_config(
        tmp_path,
        "finish",
        engine_command=(str(tmp_path / "no-such-python"), "-m", "x"),
        grace_seconds=30,
        self_destruct=vast_like(http_server.url),
    )

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
    config = make_config(tmp_path, "hang", "--ignore-term", lease_deadline=T0 + 10, grace_seconds=0, stop_timeout=30)
    clock = FakeClock()
    clock.gate = engine_started(config)

    assert make_agent(tmp_path, config, clock).run() == 0

    exited = next(e for e in read_events(config.output_dir) if e["event"] == "engine_exited")
    assert exited["exit_code"] == -9 and exited["outcome"] == "lease_expired"
    assert exited["t"] >= T0 + 10 + 30


# -- heartbeat ---------------------------------------------------------------------------------------------------------
def test_heartbeat_extends_grace_but_not_lease(tmp_path, http_server):
    config = make_config(
        tmp_path, "hang", lease_deadline=T0 + 100, grace_seconds=50, self_destruct=vast_like(http_server.url)
    )
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
        ("DELETE", "/api/v0/instances/9001/", f"Bearer {KEY}")
    ]
    assert_no_secret(tmp_path, caplog)


def test_read_proc_environ_parses_nul_separated_entries(tmp_path):
    path = tmp_path / "environ"
    path.write_bytes(b"A=1\0B=x=y\0NOEQUALS\0\0C=\0")
    assert self_destroy.read_proc_environ(path) == {"A": "1", "B": "x=y", "C": ""}
    assert self_destroy.read_proc_environ(tmp_path / "missing") == {}


def test_environment_wins_over_proc_environ(tmp_path):
    path = tmp_path / "environ"
    path.write_bytes(b"X=from-proc\0Y=only-proc\0")
    assert self_destroy.lookup_env("X", {"X": "from-env"}, path) == "from-env"
    assert self_destroy.lookup_env("Y", {}, path) == "only-proc"
    assert self_destroy.lookup_env("Z", {}, path) is None


# -- stop requests -----------------------------------------------------------------------------------------------------
def test_stop_request_is_forwarded_to_the_engine_and_skips_grace(tmp_path, http_server):
    config = make_config(tmp_path, "hang", self_destruct=vast_like(http_server.url))
    clock = FakeClock()
    holder = {}

    def controller(c: FakeClock) -> None:
        if "started" in names(read_events(config.output_dir)):
            holder["agent"].request_stop()  # what the SIGTERM handler does

    clock.on_sleep = controller
    holder["agent"] = agent = make_agent(
        tmp_path, config, clock, environ={"CONTAINER_ID": "1", "CONTAINER_API_KEY": KEY}
    )

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
    assert job_folder.last_engine_outcome(path) is None
    lines = [{"event": "started"}, {"event": "stopped"}, {"event": "engine_exited"}]
    path.write_text("x" * 100 + "\n" + "".join(json.dumps(e) + "\n" for e in lines) + '{"event": "fini')
    assert job_folder.last_engine_outcome(path, tail_bytes=90) == "stopped"


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
    assert data["self_destruct"] == {
        "id_env": "CONTAINER_ID",
        "key_env": "CONTAINER_API_KEY",
        "checks": [],
        "ways": [
            {"kind": "http", "method": "DELETE", "url": "https://console.vast.ai/api/v0/instances/{instance_id}/"}
        ],
    }
    assert data["engine_command"][0] == sys.executable and data["heartbeat_file"] == "heartbeat"
    assert AgentConfig.from_json(make_config(tmp_path, "finish").to_json()).self_destruct is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"engine_command": []}, "engine_command"),
        ({"output_dir": "relative/out"}, "absolute"),
        ({"grace_seconds": -1}, "negative"),
        ({"job_id": ""}, "job_id"),
        ({"self_destruct": {"method": "DELETE"}}, "self_destruct needs"),
        ({"self_destruct": {"id_env": "A", "key_env": "B", "ways": [{"kind": "telepathy"}]}}, "unknown kind"),
    ],
)
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
        tree = processes.process_tree(parent.pid)
        assert tree[0] == parent.pid and grandchild in tree
    finally:
        for pid in reversed(processes.process_tree(parent.pid)):
            processes.signal_quietly(pid, 9)
        parent.wait()
