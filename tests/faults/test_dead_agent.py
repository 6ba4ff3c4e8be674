"""#11.1: the agent and the engine die on the instance (the OOM killer, a crashed container). Before the fix the
controller waited in monitoring forever and a Ctrl-C then waited out the stop timeout; now it notices within a
bounded time, says so, pulls what exists and destroys the instance."""

from __future__ import annotations

import pytest
from support.cloud import tiny_job
from support.engine_hold import FIRST_EPOCH

from lorarun.runner.run import monitor as monitor_mod

from .test_faults import _patch_monitor, assert_torn_down, checkpoints, only_state, submit

pytest.importorskip("torch")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _kill_agent_and_engine(cloud, fault) -> None:
    iid = only_state().instance_id
    for what in ("lorarun.image.instance.agent", "lorarun.image.engine"):
        killed = cloud.host.kill_processes(iid, what)
        assert killed, f"nothing matched {what} on the instance"
        fault.inject(f"SIGKILL {what.rsplit('.', 1)[1]} on the instance")


def test_agent_and_engine_killed_mid_training(vast_cloud, tmp_path, monkeypatch, capsys, fault, holds):
    monkeypatch.setattr(monitor_mod, "AGENT_DEAD_AFTER", 4.0, raising=False)
    job = tiny_job(tmp_path, vast_cloud.name, epochs=30)
    vast_cloud.host.extra_env.update(holds.env(FIRST_EPOCH))  # still training when it is killed
    done = {"killed": False}

    def hook(monitor, n):
        if not done["killed"] and any(p.startswith("e2e_lora-") for p in monitor.progress.pulled):
            done["killed"] = True
            _kill_agent_and_engine(vast_cloud, fault)

    _patch_monitor(monkeypatch, hook)
    fault.expected = "agent death noticed, outputs pulled, destroyed"
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "agent on instance" in err and "died" in err
    state = only_state()
    assert state.phase == "failed" and "agent" in state.message
    assert_torn_down(vast_cloud, state)
    assert "e2e_lora-000001.safetensors" in checkpoints(tmp_path / "out")
    assert (tmp_path / "out" / "report.html").is_file()
    fault.observe("exit 1, 'agent died' said, checkpoint home, destroyed (confirmed)")


def test_ctrl_c_while_the_agent_is_dead_still_ends_promptly(vast_cloud, tmp_path, monkeypatch, capsys, fault, holds):
    # The user presses Ctrl-C before the monitor noticed: the stop that follows must not wait for an agent that
    # is not there (it waited out the 300 s stop timeout before).
    monkeypatch.setattr(monitor_mod, "AGENT_DEAD_AFTER", 4.0, raising=False)
    job = tiny_job(tmp_path, vast_cloud.name, epochs=30)
    vast_cloud.host.extra_env.update(holds.env(FIRST_EPOCH))  # still training when it is killed
    done = {"killed_at": None}

    def hook(monitor, n):
        if done["killed_at"] is None and any(p.startswith("e2e_lora-") for p in monitor.progress.pulled):
            done["killed_at"] = n
            _kill_agent_and_engine(vast_cloud, fault)  # noticed 4 s later at the earliest: the Ctrl-C comes first
        elif done["killed_at"] is not None and n == done["killed_at"] + 1:
            fault.inject("Ctrl-C while the agent is dead")
            raise KeyboardInterrupt

    _patch_monitor(monkeypatch, hook)
    fault.expected = "Ctrl-C ends it in bounded time, destroyed"
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 130, err
    state = only_state()
    assert_torn_down(vast_cloud, state)
    assert "e2e_lora-000001.safetensors" in checkpoints(tmp_path / "out")
    fault.observe("exit 130 without waiting out the stop timeout; destroyed (confirmed)")
