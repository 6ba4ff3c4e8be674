"""#27: `resources.image: stock` gets the same deadline guard as our image.

Before: nothing on the stock path started `lorarun-agent watchdog` (our image starts it from its start-up, which a
stock image does not have), so an instance whose agent and engine died after the controller was gone billed on
past its lease. Now the controller starts the watchdog right after installing lorarun (runner/run/stock_watchdog.py).

The fake host boots with nothing running (a stock image has no start-up of ours: `boot_command` stays None). The pip
install itself is replaced, in the controller's own process, by "this interpreter already has lorarun" (the test's
Python is the instance's, LORARUN_PYTHON): installing the wheel would overwrite this checkout's environment and
/usr/local/bin on a shared machine. Everything after the install — the watchdog's start, the agent, the engine, the
self-destroy with the instance's own key — is the real code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.cloud import tiny_job

from lorarun.runner.state import JobStore

from .test_faults import only_state

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

# The controller, with the stock install replaced as the module docstring says.
CONTROLLER = (
    "import sys\n"
    "from lorarun.runner.run import stock\n"
    "stock.install_command = lambda wheel, cache: 'echo \"$LORARUN_PYTHON\"'\n"
    "from lorarun.runner.cli.app import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _kill_stock_controller_at(holds, point: str, job: Path, *extra: str) -> None:
    """As test_faults._kill_at, with the stock install replaced: hold at `point`, SIGKILL there."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CONTROLLER, "submit", str(job), "--yes", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **holds.env(point)},
        start_new_session=True,
    )
    try:
        holds.wait_reached(point, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_stock_instance_destroys_itself_when_agent_and_engine_die_with_no_controller(
    vast_cloud, tmp_path, fault, holds
):
    fault.inject("stock image: controller SIGKILLed, then agent and engine killed", "the watchdog destroys it")
    fault.nobody_returns()
    assert vast_cloud.host.boot_command is None  # a stock image starts nothing of ours at boot
    job = tiny_job(tmp_path, vast_cloud.name, epochs=200, extra_resources="  image: stock")
    _kill_stock_controller_at(holds, "training", job, "--grace-seconds", "2")
    state = only_state()
    assert not state.instance_destroyed and vast_cloud.instance_ids() == [state.instance_id]
    workdir = vast_cloud.host.workdir(state.instance_id)
    assert (workdir / ".watchdog.pid").is_file(), "no watchdog was started after the install"
    killed = vast_cloud.host.kill_processes(state.instance_id, "agent --job-dir")
    killed += vast_cloud.host.kill_processes(state.instance_id, "lorarun.image.engine")
    assert killed, "the agent and the engine were not running"
    destroyed = vast_cloud.host.wait_destroyed(state.instance_id, 120)
    log_file = workdir / "watchdog.log"
    log = log_file.read_text() if log_file.exists() else "(no watchdog.log)"
    assert destroyed and vast_cloud.instance_ids() == [], f"nothing on the stock instance destroyed it: {log[-2000:]}"
    account_key = os.environ["VAST_API_KEY"]
    deletes = [r for r in vast_cloud.fake.requests if r.method == "DELETE" and state.instance_id in r.path]
    assert deletes and all(account_key not in r.headers.get("authorization", "") for r in deletes)
    assert "the agent is gone" in log, log[-2000:]
    assert JobStore().load(state.job_id).phase == "monitor"  # nobody came back: the instance ended itself
    fault.observe("the watchdog started after the install destroyed the instance with its own key")
