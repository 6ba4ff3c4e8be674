"""The on-instance agent: runs the engine, holds the lease, and makes sure a forgotten instance stops billing.

The controller starts it detached (it must survive SSH drops and the laptop going away) inside the job's remote
folder, which holds `agent.json` (an `AgentConfig`). From then on the agent, not the laptop, is what guarantees
that nothing bills forever:

    starting → training ─┬─ engine exits ───────────────→ finished | failed | stopped ─┐
                         ├─ lease passes → SIGTERM ─────→ lease_expired ──────────────┼→ grace ─┬─ `collected` → exit
                         └─ SIGTERM to the agent → forwarded → stopped → exit         │         └─ no heartbeat →
                                                      (the engine saves its last checkpoint)       self_destroying

(`stopped` without a request to the agent: someone else signalled the engine, e.g. a container shutdown.)

Files in the job folder: `agent.pid` (the agent leads its process group, so `kill -- -<pid>` ends the whole tree),
`status.json` (rewritten atomically on every change and every `status_every` seconds), `engine.log` (the engine's
stdout and stderr), `heartbeat` (touched by an attached controller: its mtime extends the grace window, never the
lease) and `collected` (written by the controller once it has the outputs: the agent exits at once).
The agent's own events go to the engine's `<output_dir>/events.jsonl`, one line per `os.write` on an O_APPEND
descriptor, so they interleave with the engine's lines without tearing.

It runs before (and without) torch: stdlib, plus `requests` for the self-destroy calls (image/instance/self_destroy.py,
which also holds the instance-id/key lookup); its unit tests drive it with a fake clock. The names of its files and
agent.json's shape are the contract's (image/agent_files.py); the job folder's file helpers are in job_folder.py,
the process helpers in processes.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lorarun.image.agent_files import (
    COLLECTED_FILE,
    CONFIG_FILE,
    DEADLINE_ENV,
    ENGINE_LOG,
    EVENTS_FILE,
    FAILED,
    FINISHED,
    GRACE,
    KEPT_FILE,
    LEASE_EXPIRED,
    PID_FILE,
    SELF_DESTROYING,
    STARTING,
    STATUS_FILE,
    STOPPED,
    TRAINING,
    AgentConfig,
)
from lorarun.image.destroy_plan import DestroyPlan
from lorarun.image.instance.job_folder import append_event, last_engine_outcome, write_json_atomic, write_text_atomic
from lorarun.image.instance.lease import (
    FINISH_ALLOWANCE,
    effective_deadline,
    parse_deadline,
    renewed_lease,
    training_finished,
    watchdog_main,
)
from lorarun.image.instance.processes import become_group_leader, process_tree, running_agent_pid, signal_quietly
from lorarun.image.instance.self_destroy import PROC1_ENVIRON, HttpFn, Runner, SelfDestroyer, lookup_env

log = logging.getLogger("lorarun.agent")

ALREADY_RUNNING = 3  # main()'s exit code when another agent holds the job folder
HEARTBEAT_SKEW = 60.0  # seconds a heartbeat's mtime may be ahead of the agent's clock (NFS, coarse timestamps)


# -- time, injected so that tests run the whole lifecycle in milliseconds ------------------------------------------
class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds: compared with the lease deadline and with the heartbeat file's mtime."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# -- the agent ---------------------------------------------------------------------------------------------------------
@dataclass
class _State:
    phase: str = STARTING
    outcome: str | None = None
    engine_pid: int | None = None
    engine_exit_code: int | None = None
    grace_until: float | None = None
    message: str = ""
    last_write: float = field(default=float("-inf"))


class Agent:
    def __init__(
        self,
        job_dir: Path,
        config: AgentConfig,
        *,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        proc_environ: Path = PROC1_ENVIRON,
        http: HttpFn | None = None,
        run: Runner = subprocess.run,
        tick: float = 1.0,
        status_every: float = 10.0,
    ):
        self.job_dir = Path(job_dir)
        self.config = config
        self.clock = clock or SystemClock()
        self.environ = os.environ if environ is None else environ
        self.proc_environ = proc_environ
        self.http = http
        self.run_command = run
        self.tick = tick
        self.status_every = status_every
        self.events_path = Path(config.output_dir) / EVENTS_FILE
        self._state = _State()
        self._engine: subprocess.Popen | None = None
        self._stop_requested = False
        self._hard: float | None = config.hard_deadline
        self._finishing_noted = False

    # -- entry points -------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Called from the SIGTERM handler: forward to the engine, wait for it, exit without a grace window."""
        self._stop_requested = True

    def run(self) -> int:
        """The whole lifecycle; returns the process exit code (0 unless the self-destruct failed)."""
        self._prepare()
        try:
            outcome = self._train()
        except Exception as exc:
            # Whatever went wrong in here, the instance must still end up collected or destroyed: stop the engine
            # and fall through to the grace window as a failure rather than die with nobody guarding the lease.
            log.exception("agent error while supervising the engine")
            outcome = self._abandon_engine(f"agent error: {type(exc).__name__}: {exc}")
        except BaseException:
            self._abandon_engine("agent interrupted")
            raise
        if self._stop_requested and outcome == STOPPED:  # the controller asked, and owns what happens next
            self._set(phase=STOPPED, message="stopped on request; agent exited")
            return 0
        return self._grace_then_leave(outcome)

    def _hard_deadline(self) -> float | None:
        if self.config.hard_deadline is not None:
            return self.config.hard_deadline
        return parse_deadline(lookup_env(DEADLINE_ENV, self.environ, self.proc_environ))

    def _lease_deadline(self) -> float:
        """The working lease as the controller last renewed it (the `lease` file), capped by the hard deadline."""
        return effective_deadline(self.config.lease_deadline, renewed_lease(self.job_dir), self._hard)

    def _lease_passed(self) -> bool:
        """Past the lease, unless training already finished: then the final save and the samples go on (up to
        FINISH_ALLOWANCE past the deadline), because cutting them loses what the user already paid for."""
        now, deadline = self.clock.now(), self._lease_deadline()
        if now < deadline:
            return False
        if training_finished(self.events_path) and now < deadline + FINISH_ALLOWANCE:
            if not self._finishing_noted:
                self._finishing_noted = True
                self._event(
                    "lease_passed_finishing",
                    lease_deadline=deadline,
                    message="lease passed after training finished: the final save and samples go on",
                )
                self._set(message="lease passed after training finished; saving and sampling go on")
            return False
        return True

    def _train(self) -> str:
        self._hard = self._hard_deadline()
        if self.clock.now() >= self._lease_deadline():
            # Started after its own lease (a late retry, a clock jump): never start paying for training.
            self._event(LEASE_EXPIRED, lease_deadline=self.config.lease_deadline, engine_started=False)
            self._set(phase=LEASE_EXPIRED, outcome=LEASE_EXPIRED, message="lease already over; engine not started")
            return LEASE_EXPIRED
        try:
            self._start_engine()
        except OSError as exc:  # a wrong interpreter path, a missing module folder: the job failed, not the agent
            self._event("engine_exited", exit_code=None, outcome=FAILED, error=f"could not start the engine: {exc}")
            self._set(phase=FAILED, outcome=FAILED, message=f"could not start the engine: {exc}")
            return FAILED
        return self._supervise()

    def _abandon_engine(self, why: str) -> str:
        if self._engine is not None and self._engine.poll() is None:
            try:
                self._stop_engine(why)
            except Exception:
                log.exception("could not stop the engine cleanly: SIGKILL")
                for pid in reversed(process_tree(self._engine.pid)):
                    signal_quietly(pid, signal.SIGKILL)
        code = self._engine.poll() if self._engine is not None else None
        self._event("engine_exited", exit_code=code, outcome=FAILED, error=why)
        self._set(phase=FAILED, outcome=FAILED, engine_exit_code=code, message=why)
        return FAILED

    # -- phases ---------------------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        self.job_dir.mkdir(parents=True, exist_ok=True)
        Path(self.config.output_dir).mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.job_dir / PID_FILE, f"{os.getpid()}\n")
        # A `collected` marker from an earlier run of this job would make us leave before anyone pulled anything.
        (self.job_dir / COLLECTED_FILE).unlink(missing_ok=True)
        (self.job_dir / KEPT_FILE).unlink(missing_ok=True)
        self._set(phase=STARTING, message="agent started")
        self._event(
            "agent_started",
            pid=os.getpid(),
            job_id=self.config.job_id,
            lease_deadline=self.config.lease_deadline,
            grace_seconds=self.config.grace_seconds,
            self_destruct=self.config.self_destruct is not None,
        )
        log.info(
            "agent %d for job %s: lease until %s", os.getpid(), self.config.job_id, _fmt_ts(self.config.lease_deadline)
        )

    def _start_engine(self) -> None:
        env = dict(self.environ)
        if self.config.self_destruct is not None:
            # The engine has no business with the instance key; keep it to the one process that needs it.
            env.pop(self.config.self_destruct.key_env, None)
        with open(self.job_dir / ENGINE_LOG, "ab") as engine_log:
            self._engine = subprocess.Popen(
                list(self.config.engine_command),
                cwd=self.job_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=engine_log,
                stderr=subprocess.STDOUT,
            )
        log.info("engine started: pid %d", self._engine.pid)
        self._set(phase=TRAINING, engine_pid=self._engine.pid, message="engine running")

    def _supervise(self) -> str:
        """Wait for the engine; stop it when the lease passes or the agent is asked to stop."""
        assert self._engine is not None
        while True:
            code = self._engine.poll()
            if code is not None:
                return self._engine_exited(code, self._classify_exit(code))
            if self._stop_requested:
                return self._engine_exited(self._stop_engine("agent asked to stop"), STOPPED)
            if self._lease_passed():
                self._event(LEASE_EXPIRED, lease_deadline=self._lease_deadline(), engine_started=True)
                self._set(phase=LEASE_EXPIRED, message="lease passed: stopping the engine (it saves a checkpoint)")
                return self._engine_exited(self._stop_engine("lease expired"), LEASE_EXPIRED)
            self._refresh()
            self.clock.sleep(self.tick)

    def _stop_engine(self, why: str) -> int:
        """SIGTERM (the engine saves a checkpoint and exits 0), then SIGKILL to its whole tree after stop_timeout."""
        assert self._engine is not None
        log.info("%s: SIGTERM to engine %d", why, self._engine.pid)
        signal_quietly(self._engine.pid, signal.SIGTERM)
        give_up_at = self.clock.now() + self.config.stop_timeout
        while (code := self._engine.poll()) is None:
            if self.clock.now() >= give_up_at:
                log.warning(
                    "engine %d still running %.0f s after SIGTERM: SIGKILL", self._engine.pid, self.config.stop_timeout
                )
                for pid in reversed(process_tree(self._engine.pid)):
                    signal_quietly(pid, signal.SIGKILL)
                return self._engine.wait()
            self._refresh()
            self.clock.sleep(min(self.tick, 0.2))
        return code

    def _classify_exit(self, code: int) -> str:
        """finished or failed by exit code, except that an engine stopped by someone else (a container shutdown
        signals every process) says so in its last event; it still gets the grace window."""
        if code != 0:
            return FAILED
        return STOPPED if last_engine_outcome(self.events_path) == STOPPED else FINISHED

    def _engine_exited(self, code: int, outcome: str) -> str:
        log.info("engine exited with %d: %s", code, outcome)
        self._event("engine_exited", exit_code=code, outcome=outcome)
        self._set(phase=outcome, outcome=outcome, engine_exit_code=code, message=f"engine exited with {code}")
        return outcome

    def _grace_then_leave(self, outcome: str) -> int:
        """Wait for a controller to collect the outputs; destroy the instance if nobody comes."""
        started = self.clock.now()
        while True:
            if (self.job_dir / COLLECTED_FILE).exists() or (self.job_dir / KEPT_FILE).exists():
                self._set(phase=outcome, grace_until=None, message="outputs collected; agent exited")
                return 0
            if self._stop_requested:
                self._set(phase=outcome, grace_until=None, message="stopped on request during the grace window")
                return 0
            now = self.clock.now()
            grace_until = max(started, self._last_heartbeat(now)) + self.config.grace_seconds
            if now >= grace_until:
                break
            if grace_until != self._state.grace_until:
                self._set(
                    phase=GRACE,
                    grace_until=grace_until,
                    message=f"{outcome}; waiting for the controller to collect outputs",
                )
            self._refresh()
            self.clock.sleep(self.tick)
        if self.config.self_destruct is None:
            self._set(phase=outcome, message="grace window over, nobody collected; no self-destruct here, exited")
            return 0
        return self._self_destruct(self.config.self_destruct)

    def _last_heartbeat(self, now: float) -> float:
        try:
            mtime = (self.job_dir / self.config.heartbeat_file).stat().st_mtime
        except OSError:
            return float("-inf")
        # The controller touches the file on this machine, so its mtime is never ahead of our clock; one that is
        # (a `touch -d`, a clock stepped back) is ignored: capped at `now`, it would hold the instance forever.
        return mtime if mtime <= now + HEARTBEAT_SKEW else float("-inf")

    def _self_destruct(self, how: DestroyPlan) -> int:
        """Every configured way in order, each confirmed (image/instance/self_destroy.py); a loud event when none worked."""
        self._set(phase=SELF_DESTROYING, grace_until=None, message="grace window over: destroying this instance")
        outcome = SelfDestroyer(
            how,
            environ=self.environ,
            proc_environ=self.proc_environ,
            sleep=self.clock.sleep,
            http=self.http,
            run=self.run_command,
        ).destroy()
        if outcome.ok:
            self._event(
                "self_destroy",
                ok=True,
                confirmed=outcome.confirmed,
                via=outcome.via,
                attempts=outcome.attempts,
                tried=list(outcome.tried),
            )
            if not outcome.confirmed:
                log.warning("self-destroy accepted (%s) but nothing could confirm the instance is gone", outcome.via)
            self._set(
                phase=SELF_DESTROYING,
                message=f"self-destruct accepted ({outcome.via})" + ("" if outcome.confirmed else ", unconfirmed"),
            )
            return 0
        log.error("SELF-DESTRUCT FAILED, the instance may still be billing: %s", outcome.error)
        self._event(
            "self_destroy",
            ok=False,
            confirmed=False,
            error=outcome.error,
            attempts=outcome.attempts,
            tried=list(outcome.tried),
        )
        self._set(phase=SELF_DESTROYING, message=f"self-destruct failed: {outcome.error}")
        return 1

    # -- bookkeeping ---------------------------------------------------------------------------------------------------
    def _set(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self._state, name, value)
        self._write_status()

    def _refresh(self) -> None:
        if self.clock.now() - self._state.last_write >= self.status_every:
            self._write_status()

    def _write_status(self) -> None:
        now = self.clock.now()
        s = self._state
        write_json_atomic(
            self.job_dir / STATUS_FILE,
            {
                "job_id": self.config.job_id,
                "agent_pid": os.getpid(),
                "phase": s.phase,
                "outcome": s.outcome,
                "engine_pid": s.engine_pid,
                "engine_exit_code": s.engine_exit_code,
                "lease_deadline": self._lease_deadline(),
                "hard_deadline": self._hard,
                "grace_until": s.grace_until,
                "updated": round(now, 3),
                "message": s.message,
            },
        )
        s.last_write = now

    def _event(self, event: str, **fields: Any) -> None:
        try:
            append_event(self.events_path, event, self.clock.now(), **fields)
        except OSError as exc:  # a full disk must not stop the agent from guarding the lease
            log.warning("could not append %s to %s: %s", event, self.events_path, exc)


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _fmt_ts(ts: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    except (OverflowError, ValueError, OSError):  # formatting must never be what kills the agent
        return f"{ts!r} (unix seconds)"


# -- process entry point -----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["watchdog"]:  # started by the image at boot: the lease before any controller arrives
        return watchdog_main(argv[1:])
    parser = argparse.ArgumentParser(prog="lorarun-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--job-dir", type=Path, default=Path.cwd(), help="the job's remote folder (holds agent.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s agent %(levelname)s %(message)s")
    job_dir = args.job_dir.resolve()
    config = AgentConfig.load(job_dir / CONFIG_FILE)
    if (other := running_agent_pid(job_dir)) is not None:
        # Two agents would run two engines into one output folder; the controller reattaches to the first.
        log.error("an agent (pid %d) already runs for job %s; not starting another", other, config.job_id)
        return ALREADY_RUNNING
    become_group_leader()
    agent = Agent(job_dir, config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.request_stop())
    # Detached with nohup, but a hang-up must never end the lease guard early.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
