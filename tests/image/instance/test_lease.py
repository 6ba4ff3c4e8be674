"""The lease (#11.3, #11.4): renewed by an attached controller, capped by the hard deadline from the budget, never
cutting a training that finished; and the watchdog that guards an instance before (and after) the agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lorarun.image.agent_files import LEASE_FILE, split_env
from lorarun.image.instance.lease import Watchdog, effective_deadline, training_finished

from .conftest import T0, FakeClock, make_config, names, read_events
from .test_agent import KEY, engine_started, make_agent, status, vast_like


def test_effective_deadline_renewed_but_never_past_hard():
    assert effective_deadline(100.0, None, None) == 100.0
    assert effective_deadline(100.0, 150.0, None) == 150.0
    assert effective_deadline(100.0, 50.0, None) == 100.0  # a renewal never shortens
    assert effective_deadline(100.0, 500.0, 300.0) == 300.0
    assert effective_deadline(400.0, None, 300.0) == 300.0


def test_training_finished_reads_the_last_step(tmp_path):
    events = tmp_path / "events.jsonl"
    assert not training_finished(events)
    events.write_text('{"event":"step","step":3,"total_steps":10}\n')
    assert not training_finished(events)
    with events.open("a") as f:
        f.write('{"event":"step","step":10,"total_steps":10}\n{"event":"sample","path":"s.png"}\n')
    assert training_finished(events)


def test_renewed_lease_keeps_a_healthy_engine_running(tmp_path, http_server):
    """Before: the lease (estimate × 1.5) ended healthy jobs whatever the controller did."""
    config = make_config(
        tmp_path, "hang", lease_deadline=T0 + 100, grace_seconds=0, self_destruct=vast_like(http_server.url)
    )
    clock = FakeClock()
    clock.gate = engine_started(config)
    job_dir = tmp_path / "job"
    agent = make_agent(tmp_path, config, clock, environ={"CONTAINER_ID": "7", "CONTAINER_API_KEY": KEY})

    def controller(c: FakeClock) -> None:
        if c.t < T0 + 1000:
            (job_dir / LEASE_FILE).write_text(str(c.t + 100))  # progress seen: renewed
        elif c.t > T0 + 1300:
            agent.request_stop()  # never reached if the renewal stopped mattering

    clock.on_sleep = controller
    agent.run()
    lease = next(e for e in read_events(config.output_dir) if e["event"] == "lease_expired")
    assert T0 + 1000 <= lease["t"] <= T0 + 1102  # ran until renewals stopped, then the last renewal ran out


def test_renewals_never_pass_the_hard_deadline(tmp_path):
    config = make_config(tmp_path, "hang", lease_deadline=T0 + 100, grace_seconds=0, hard_deadline=T0 + 400)
    clock = FakeClock()
    clock.gate = engine_started(config)
    job_dir = tmp_path / "job"
    clock.on_sleep = lambda c: (job_dir / LEASE_FILE).write_text(str(c.t + 100))
    make_agent(tmp_path, config, clock).run()
    lease = next(e for e in read_events(config.output_dir) if e["event"] == "lease_expired")
    assert T0 + 400 <= lease["t"] <= T0 + 402


def test_lease_passing_after_training_finished_does_not_cut_samples(tmp_path, http_server):
    """Before: "training failed: lease passed" while the samples rendered; no grid, no final LoRA."""
    config = make_config(
        tmp_path, "sample", lease_deadline=T0 + 50, grace_seconds=0, self_destruct=vast_like(http_server.url)
    )
    clock = FakeClock()
    clock.gate = engine_started(config)
    out = Path(config.output_dir)
    clock.on_sleep = lambda c: (out / "release").write_text("") if c.t > T0 + 500 else None
    agent = make_agent(tmp_path, config, clock, environ={"CONTAINER_ID": "7", "CONTAINER_API_KEY": KEY})
    agent.run()
    order = names(read_events(out))
    assert "lease_expired" not in order
    assert "lease_passed_finishing" in order
    assert order.index("lease_passed_finishing") < order.index("finished") < order.index("engine_exited")
    assert (out / "lora.safetensors").read_bytes() == b"final"
    assert status(tmp_path / "job")["outcome"] == "finished"


# ---- the watchdog ------------------------------------------------------------------------------------------------
def _watchdog(tmp_path, http_server, deadline, **kw) -> tuple[Watchdog, FakeClock]:
    clock = FakeClock()
    env = {
        "LORARUN_DEADLINE": str(int(deadline)),
        "LORARUN_JOB_ID": "job42",
        "LORARUN_WORKDIR": str(tmp_path),
        "CONTAINER_ID": "99",
        "CONTAINER_API_KEY": KEY,
        **dict(split_env("LORARUN_SELF_DESTRUCT", json.dumps(vast_like(http_server.url).to_dict()), piece=40)),
    }
    dog = Watchdog(env, now=clock.now, sleep=clock.sleep, proc_environ=tmp_path / "none", tick=5.0, **kw)
    return dog, clock


def test_watchdog_destroys_an_instance_no_agent_ever_reached(tmp_path, http_server):
    dog, clock = _watchdog(tmp_path, http_server, T0 + 60)
    assert dog.run() == 0
    assert T0 + 60 <= clock.t <= T0 + 66
    assert [(r.method, r.path) for r in http_server.requests] == [("DELETE", "/api/v0/instances/99/")]
    assert http_server.requests[0].authorization == f"Bearer {KEY}"


def test_watchdog_stands_by_while_the_agent_runs_and_exits_when_collected(tmp_path, http_server):
    job_dir = tmp_path / "job42"
    job_dir.mkdir()
    agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "lorarun.image.instance.agent"])
    try:
        (job_dir / "agent.pid").write_text(f"{agent.pid}\n")
        dog, clock = _watchdog(tmp_path, http_server, T0 + 60)
        clock.on_sleep = lambda c: (job_dir / "collected").write_text("") if c.t > T0 + 200 else None
        assert dog.run() == 0
        assert clock.t > T0 + 200 and http_server.requests == []  # past the deadline, but the agent held it
    finally:
        agent.kill()
        agent.wait()


def test_watchdog_ends_the_instance_when_the_agent_died_and_nobody_collected(tmp_path, http_server):
    job_dir = tmp_path / "job42"
    job_dir.mkdir()
    (job_dir / "agent.json").write_text(json.dumps({"grace_seconds": 30}))
    agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "lorarun.image.instance.agent"])
    (job_dir / "agent.pid").write_text(f"{agent.pid}\n")
    dog, clock = _watchdog(tmp_path, http_server, T0 + 10_000)
    died = {}

    def oom_killer(c: FakeClock) -> None:
        if c.t > T0 + 20 and not died:
            agent.kill()
            agent.wait()
            died["t"] = c.t

    clock.on_sleep = oom_killer
    assert dog.run() == 0
    assert died and died["t"] + 30 <= clock.t <= died["t"] + 45  # grace after the agent's end, not the deadline
    assert len(http_server.requests) == 1


def test_watchdog_without_a_deadline_says_so(tmp_path, http_server):
    dog = Watchdog({}, now=time.time, sleep=time.sleep, proc_environ=tmp_path / "none")
    assert dog.run() == 2


def test_agent_cli_runs_the_watchdog(tmp_path, http_server):
    env = dict(
        os.environ,
        LORARUN_DEADLINE=str(int(time.time()) - 1),
        LORARUN_JOB_ID="job42",
        LORARUN_WORKDIR=str(tmp_path),
        CONTAINER_ID="5",
        CONTAINER_API_KEY=KEY,
        **dict(split_env("LORARUN_SELF_DESTRUCT", json.dumps(vast_like(http_server.url).to_dict()))),
    )
    done = subprocess.run(
        [sys.executable, "-m", "lorarun.image.instance.agent", "watchdog", "--tick", "0.1"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert [(r.method, r.path) for r in http_server.requests] == [("DELETE", "/api/v0/instances/5/")]
    assert KEY.encode() not in done.stderr


def test_watchdog_with_a_kept_instance_waits_for_the_hard_deadline(tmp_path, http_server):
    job_dir = tmp_path / "job42"
    job_dir.mkdir()
    (job_dir / "kept").write_text("")  # `--keep`: the agent has exited on purpose
    dog, clock = _watchdog(tmp_path, http_server, T0 + 3600)
    assert dog.run() == 0
    assert T0 + 3600 <= clock.t <= T0 + 3606 and len(http_server.requests) == 1


def test_agent_exits_in_its_grace_window_when_kept(tmp_path, http_server):
    config = make_config(tmp_path, "finish", grace_seconds=600, self_destruct=vast_like(http_server.url))
    clock = FakeClock()
    job_dir = tmp_path / "job"
    clock.on_sleep = lambda c: (job_dir / "kept").write_text("") if status(job_dir)["phase"] == "grace" else None
    assert make_agent(tmp_path, config, clock).run() == 0
    assert http_server.requests == []
