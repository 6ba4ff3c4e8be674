"""The instance's lease: how long it may bill without a controller, from the first second after `create()`.

Two deadlines, both unix seconds:

- the **hard deadline**: given to the instance at create time as `LORARUN_DEADLINE` (its environment), derived by
  the controller from the user's budget (`max_cost ÷ price`), or from the estimate when there is no budget, or
  set by `--hard-lease-minutes`. `lorarun-agent watchdog`, started by the image's own start-up
  (image/instance/startup/lorarun-startup.sh), destroys the instance past it unless the agent proper has taken over — so an
  instance that no controller ever reaches (the laptop died during boot) still ends.
- the **working lease**: `agent.json`'s `lease_deadline`, shorter; an attached controller renews it while the job
  makes progress by writing a later deadline into the job folder's `lease` file. Never past the hard deadline.

Neither cuts a job whose training finished: past a deadline, an engine that already reported its last step is
left to save the final LoRA and render its samples (for up to FINISH_ALLOWANCE past the deadline), and the
grace window for the pull is extended by the controller's heartbeat as always.

Stdlib only, like the agent: it runs before (and without) torch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from lorarun.image.agent_files import (
    COLLECTED_FILE,
    CONFIG_FILE,
    DEADLINE_ENV,
    HEARTBEAT_FILE,
    JOB_ID_ENV,
    KEPT_FILE,
    LEASE_FILE,
    SELF_DESTRUCT_ENV,
    joined_env,
)
from lorarun.image.destroy_plan import DestroyPlan
from lorarun.image.instance.processes import running_agent_pid
from lorarun.image.instance.self_destroy import PROC1_ENVIRON, SelfDestroyer, lookup_env

log = logging.getLogger("lorarun.lease")

FINISH_ALLOWANCE = 3600.0  # past a deadline, how long a finished training may still save and sample
DEFAULT_GRACE = 900.0  # the watchdog's wait for a controller after the agent is gone (agent.json's when present)
WATCHDOG_TICK = 5.0


def parse_deadline(raw: str | None) -> float | None:
    """A finite, positive unix time, or None."""
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def renewed_lease(job_dir: Path) -> float | None:
    try:
        return parse_deadline((job_dir / LEASE_FILE).read_text(encoding="utf-8").strip())
    except OSError:
        return None


def effective_deadline(working: float, renewed: float | None, hard: float | None) -> float:
    """The working lease, as renewed, never past the hard deadline."""
    deadline = max(working, renewed) if renewed is not None else working
    return min(deadline, hard) if hard is not None else deadline


def training_finished(events_path: Path, tail_bytes: int = 65536) -> bool:
    """Has the engine reported its last training step (or saved its final LoRA)? Read from the end of its
    events.jsonl: what is left after that (final save, samples, grid) is never cut by a lease."""
    try:
        with open(events_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("kind") == "final" or event.get("event") == "finished":
            return True
        if event.get("event") == "step":
            step, total = event.get("step"), event.get("total_steps")
            return isinstance(step, int) and isinstance(total, int) and total > 0 and step >= total
    return False


# -- the watchdog ---------------------------------------------------------------------------------------------------
class Watchdog:
    """Started by the image at boot (`lorarun-agent watchdog`), before any controller connects.

    - no agent has taken over and the hard deadline passed → self-destroy;
    - the agent runs → it holds the lease; the watchdog only watches (and still ends an instance whose agent
      hangs past deadline + FINISH_ALLOWANCE + grace);
    - the agent is gone (ended or died) with nobody having collected → self-destroy once the grace window after
      its end, extended by the controller's heartbeat, has passed;
    - `collected` in the job folder → the controller has the outputs: exit;
    - `kept` in the job folder (`--keep`) → the user keeps it: destroyed only at the hard deadline.
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        now: Callable[[], float],
        sleep: Callable[[float], None],
        proc_environ: Path = PROC1_ENVIRON,
        http=None,
        run=subprocess.run,
        tick: float = WATCHDOG_TICK,
        home: Path | None = None,
    ):
        self.environ = environ
        self.now = now
        self.sleep = sleep
        self.proc_environ = proc_environ
        self.http = http
        self.run_command = run
        self.tick = tick
        env = lambda name: lookup_env(name, environ, proc_environ)  # noqa: E731
        self.deadline = parse_deadline(env(DEADLINE_ENV))
        job_id = env(JOB_ID_ENV)
        workdir = Path(env("LORARUN_WORKDIR") or (home or Path.home()) / "lorarun")
        self.job_dir = workdir / job_id if job_id else None
        raw = joined_env(SELF_DESTRUCT_ENV, env)
        self.self_destruct = DestroyPlan.from_dict(json.loads(raw)) if raw else None

    def run(self) -> int:
        if self.deadline is None:
            log.error("%s is not set to a unix time: nothing to guard", DEADLINE_ENV)
            return 2
        log.info("watchdog: hard deadline %s, job folder %s", _fmt(self.deadline), self.job_dir)
        agent_gone_at: float | None = None
        agent_seen = False
        while True:
            now = self.now()
            if self.job_dir is not None and (self.job_dir / COLLECTED_FILE).exists():
                log.info("outputs collected: the watchdog exits")
                return 0
            if self.job_dir is not None and (self.job_dir / KEPT_FILE).exists():
                if now >= self.deadline:  # `--keep`: the user has it, but never past the budget's deadline
                    return self._destroy("kept on purpose, and now past its hard deadline")
                self.sleep(self.tick)
                continue
            agent = running_agent_pid(self.job_dir) if self.job_dir is not None else None
            grace = _grace_seconds(self.job_dir / CONFIG_FILE) if self.job_dir is not None else DEFAULT_GRACE
            if agent is not None:
                agent_seen, agent_gone_at = True, None
                if now >= self.deadline + FINISH_ALLOWANCE + grace:
                    return self._destroy(f"agent {agent} still running long past the hard deadline")
            elif agent_seen:
                agent_gone_at = agent_gone_at or now
                if now >= max(agent_gone_at, self._heartbeat()) + grace:
                    return self._destroy("the agent is gone and no controller collected the outputs")
            elif now >= self.deadline:
                return self._destroy("the hard deadline passed and no agent took over")
            self.sleep(self.tick)

    def _heartbeat(self) -> float:
        try:
            return (self.job_dir / HEARTBEAT_FILE).stat().st_mtime if self.job_dir is not None else -math.inf
        except OSError:
            return -math.inf

    def _destroy(self, why: str) -> int:
        if self.self_destruct is None:
            log.warning("%s; no self-destroy on this machine: exiting", why)
            return 0
        log.warning("%s: destroying this instance", why)
        outcome = SelfDestroyer(
            self.self_destruct,
            environ=self.environ,
            proc_environ=self.proc_environ,
            sleep=self.sleep,
            http=self.http,
            run=self.run_command,
        ).destroy()
        if outcome.ok:
            log.info("self-destroy accepted (%s)%s", outcome.via, "" if outcome.confirmed else ", unconfirmed")
            return 0
        log.error("SELF-DESTROY FAILED, the instance may still be billing: %s", outcome.error)
        return 1


def _grace_seconds(agent_json: Path) -> float:
    try:
        value = float(json.loads(agent_json.read_text(encoding="utf-8"))["grace_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_GRACE
    return value if math.isfinite(value) and value >= 0 else DEFAULT_GRACE


def _fmt(ts: float) -> str:
    import time

    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    except (OverflowError, ValueError, OSError):  # a deadline of 1e30: the watchdog must live to act on it
        return f"{ts!r} (unix seconds)"


def watchdog_main(argv: list[str]) -> int:
    import argparse
    import time

    parser = argparse.ArgumentParser(
        prog="lorarun-agent watchdog",
        description="Destroy this instance past LORARUN_DEADLINE unless the agent took over.",
    )
    parser.add_argument("--tick", type=float, default=WATCHDOG_TICK, help="seconds between checks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s watchdog %(levelname)s %(message)s")
    import signal

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # started with nohup; a hang-up must never end the guard
    return Watchdog(os.environ, now=time.time, sleep=time.sleep, tick=args.tick).run()
