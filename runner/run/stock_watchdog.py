"""The stock path's deadline guard (#27): the same `lorarun-agent watchdog` our image's start-up runs.

Our image starts the watchdog from its own start-up (image/instance/startup/lorarun-startup.sh), before any
controller connects. A stock image (`resources.image: stock`, runner/run/stock.py) has no start-up of ours and no
lorarun until the controller pip-installs it, so nothing there would ever destroy an instance whose agent and engine
died after the controller went away: it billed on past its lease. So the controller starts the watchdog itself, over
SSH, the moment lorarun is installed (before the upload, before the agent): detached with setsid + nohup so that it
outlives the connection and the controller, exactly as the image starts it.

The watchdog's inputs are the create call's (LORARUN_DEADLINE, LORARUN_JOB_ID, LORARUN_SELF_DESTRUCT_*: names of
variables and URLs, no secret), and the controller hands them over explicitly on its command line rather than
trusting an SSH session's environment: Vast's SSH sessions do not carry the container's variables at all unless a
start-up wrote /etc/environment (providers.md §1.3; ours does, a stock image does not), and an environment that
reached the session through a shell may have lost the JSON's quotes. The instance-scoped key itself is still read on
the instance only (session, else /proc/1/environ: image/instance/self_destroy.py `lookup_env`).

One watchdog per machine: a pid file beside the job folders; a batch's later installs find it alive and start
none (two would both self-destroy, harmlessly but noisily).
"""

from __future__ import annotations

import json
import posixpath
import shlex

from lorarun.image.agent_files import DEADLINE_ENV, JOB_ID_ENV, SELF_DESTRUCT_ENV, split_env
from lorarun.image.destroy_plan import DestroyPlan
from lorarun.runner.remote.layout import RemoteLayout
from lorarun.sshlink.transport import Transport

PID_FILE = ".watchdog.pid"
LOG_FILE = "watchdog.log"


def watchdog_pid_file(layout: RemoteLayout) -> str:
    return posixpath.join(posixpath.dirname(layout.root), PID_FILE)


def watchdog_env(job_id: str, hard_deadline: float | None, destruct: DestroyPlan | None) -> dict[str, str]:
    """The variables the create call gave the instance for its watchdog (provision.py `spec_for`), rebuilt."""
    env = {JOB_ID_ENV: job_id}
    if hard_deadline is not None:
        env[DEADLINE_ENV] = str(int(hard_deadline))
    if destruct is not None:
        env.update(split_env(SELF_DESTRUCT_ENV, json.dumps(destruct.to_dict(), separators=(",", ":"))))
    return env


def start_watchdog(transport: Transport, layout: RemoteLayout, env: dict[str, str]) -> bool:
    """Start `<python> -m lorarun.image.instance.agent watchdog` on the instance unless one already runs there.
    Returns True when one was started. `layout.python` must be the interpreter lorarun was just installed into;
    `env` from `watchdog_env` (without a deadline the watchdog reads LORARUN_DEADLINE on the instance)."""
    pid_file = watchdog_pid_file(layout)
    q_pid = shlex.quote(pid_file)
    # A pid in the file that is alive and is a watchdog (pids get reused): nothing to do.
    running = transport.run(
        f'pid=$(cat {q_pid} 2>/dev/null) && tr "\\0" " " < /proc/"$pid"/cmdline 2>/dev/null | grep -q " watchdog"',
        timeout=30,
        check=False,
    )
    if running.exit_code == 0:
        return False
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    command = f"exec env {assignments} {shlex.quote(layout.python)} -m lorarun.image.instance.agent watchdog"
    pid = transport.start_detached(
        command, cwd=posixpath.dirname(layout.root), log_path=posixpath.join(posixpath.dirname(layout.root), LOG_FILE)
    )
    transport.run(f"printf '%s' {pid} > {q_pid}", timeout=30, check=False)
    return True
