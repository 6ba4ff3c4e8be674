"""Job state on the laptop: one folder per job under the lorarun home, with `state.json` written *before* each
phase starts, so a crash at any point leaves a record that `status`, `attach` and `gc` can act on.

Layout of `$LORARUN_HOME/jobs/<job_id>/`: state.json, job file copy, engine_config.json, events.jsonl (local copy
of the engine's events), ssh/ (the per-job key and pinned host key), report files once finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from lorarun.image.hold_points import hold
from lorarun.provider_adapters.user_files import lorarun_home
from lorarun.runner.errors import JobBusy, JobNotFound

PHASES = (
    "created",
    "validate",
    "estimate",
    "provision",
    "wait",
    "upload",
    "run",
    "monitor",
    "finish",
    "teardown",
    "done",
    "stopped",
    "failed",
    "kept",
)
# `stopped`: ended on purpose before its last step (Ctrl-C → stop, `lorarun down`, SIGTERM, max_cost, the UI's
# Stop): its outputs came home verified and its instance was torn down as for `done`, but it did not train to the end.
FINAL_PHASES = ("done", "stopped", "failed", "kept")
ENDED_WELL = ("done", "stopped")  # outputs home and verified, instance torn down


def controller_alive(state: JobState) -> bool:
    """Is the `lorarun` process that drives this job still running? Unknowable for another machine: assume so."""
    import socket

    if state.controller_pid is None:
        return False
    if state.controller_host and state.controller_host != socket.gethostname():
        return True
    try:
        os.kill(state.controller_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user holds that pid: not ours, but be conservative
    return True


@dataclass(frozen=True)
class LockHolder:
    """Who drives a job: one controller at a time (submit, attach or down), named so a second one can say who."""

    pid: int
    host: str
    command: str
    since: float

    def describe(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"`lorarun {self.command}` (pid {self.pid} on {self.host}, since {when})"

    def alive(self) -> bool:
        """Running still? A holder on another machine cannot be checked from here: assume it is."""
        import socket

        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def new_job_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "job"
    return f"{slug}-{os.urandom(3).hex()}"  # as secrets.token_hex(3), without importing hashlib at start-up


def _report_outcome(output_dir: str | None, job_id: str) -> str | None:
    """The outcome report.json records for this job (runner/run/report.py), or None."""
    try:
        data = json.loads((Path(output_dir or "") / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("outcome") if isinstance(data, dict) and data.get("job_id") in (None, job_id) else None


@dataclass(frozen=True)
class JobState:
    job_id: str
    name: str
    job_file: str
    provider: str
    output_dir: str
    phase: str = "created"
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    instance_id: str | None = None  # written the moment a provider returns one, before anything else
    instance_label: str | None = None
    leaked_instance_ids: tuple[str, ...] = ()  # ids a failed create still returned: destroyed at once, kept here
    offer_id: str | None = None
    gpu: str | None = None
    price_per_hour: float | None = None
    interruptible: bool = False  # the rental is interruptible: `attach` resumes it elsewhere if it was taken back
    ssh_host: str | None = None
    ssh_port: int | None = None
    ssh_user: str | None = None
    remote_dir: str | None = None
    lease_deadline: float | None = None
    predicted_cost: float | None = None
    instance_destroyed: bool = False
    controller_pid: int | None = None  # the `lorarun` process driving the job; gc treats a dead one as gone
    controller_host: str | None = None
    message: str = ""
    history: tuple[tuple[str, float], ...] = ()

    @property
    def is_final(self) -> bool:
        return self.phase in FINAL_PHASES


class JobStore:
    """Reads and writes one job's folder. Every write is atomic (temp file + rename)."""

    def __init__(self, home: Path | None = None):
        self.home = home or lorarun_home()
        self.jobs_dir = self.home / "jobs"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def create(self, state: JobState) -> JobState:
        folder = self.job_dir(state.job_id)
        folder.mkdir(parents=True, exist_ok=False)
        return self.save(state)

    def save(self, state: JobState) -> JobState:
        state = dataclasses.replace(state, updated_at=time.time())
        path = self.job_dir(state.job_id) / "state.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(state), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return state

    def update(self, state: JobState, **changes) -> JobState:
        return self.save(dataclasses.replace(state, **changes))

    def advance(self, state: JobState, phase: str, message: str = "") -> JobState:
        """Record that `phase` is starting (called before the phase does anything)."""
        assert phase in PHASES, phase
        history = state.history + ((phase, time.time()),)
        state = self.update(state, phase=phase, message=message, history=history)
        hold(f"phase:{phase}")  # tests only (image/hold_points.py): the state file already says `phase`
        return state

    # ---- one controller per job ------------------------------------------------------------------------------
    # `controller.lock` (JSON: pid, host, command, since) is created exclusively (O_EXCL) by the controller that
    # drives the job; a second `attach` is refused with the holder's name, and `down` from elsewhere leaves a
    # `stop.request` the holder polls (or takes the lock over when the holder is dead).
    def lock_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "controller.lock"

    def stop_request_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "stop.request"

    def lock_holder(self, job_id: str) -> LockHolder | None:
        try:
            data = json.loads(self.lock_path(job_id).read_text(encoding="utf-8"))
            return LockHolder(
                int(data["pid"]), str(data["host"]), str(data.get("command", "?")), float(data.get("since", 0.0))
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return LockHolder(0, "?", "?", 0.0)  # unreadable: treated as a dead holder (pid 0 is never ours)

    def acquire(self, job_id: str, command: str) -> LockHolder:
        """Hold `job_id` for this process. A live holder → JobBusy naming it; a dead one is taken over."""
        import socket

        me = LockHolder(os.getpid(), socket.gethostname(), command, time.time())
        path = self.lock_path(job_id)
        for _ in range(3):
            try:
                self._create_lock(path, me)
            except FileExistsError:
                holder = self.lock_holder(job_id)
                if holder is None:
                    continue  # released between our two looks: try again
                if (holder.pid, holder.host) == (me.pid, me.host):
                    return holder  # this process holds it already (a pipeline inside a command that locked)
                if holder.pid and holder.alive():
                    raise JobBusy(
                        f"job {job_id} is driven by {holder.describe()}; follow it there, or stop it "
                        f"from here with `lorarun down {job_id}`",
                        holder=holder,
                    ) from None  # the lock file existing is the expected case, not a cause worth chaining
                self._remove_dead_lock(job_id, holder)
                continue
            return me
        raise JobBusy(f"job {job_id}: another controller keeps taking {path}; try again")

    @staticmethod
    def _create_lock(path: Path, me: LockHolder) -> None:
        """Create the lock with its content in one step (FileExistsError when it exists): written to a private file
        first, then hard-linked into place, so nobody ever reads a lock half written (an unreadable lock counts as
        a dead holder's and would be taken over)."""
        private = path.with_name(f"controller.lock.{me.pid}.new")
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(dataclasses.asdict(me), fh)
        try:
            os.link(private, path)
        finally:
            private.unlink(missing_ok=True)

    def _remove_dead_lock(self, job_id: str, dead: LockHolder) -> None:
        """Remove the lock of a dead holder, unless someone took it over meanwhile. Two takers that both judged the
        same holder dead must not both win: without the guard, the second would move aside the lock the first has
        just written. Looking again and removing happen under an flock (freed when the process dies)."""
        import fcntl

        path = self.lock_path(job_id)
        with open(path.with_name("controller.lock.guard"), "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            if self.lock_holder(job_id) == dead:
                path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def holding(self, job_ids: list[str], command: str):
        """Hold every job in `job_ids` for the duration (all or none), then let go."""
        held: list[str] = []
        try:
            for job_id in job_ids:
                self.acquire(job_id, command)
                held.append(job_id)
            yield
        finally:
            for job_id in held:
                self.release(job_id)

    def release(self, job_id: str) -> None:
        holder = self.lock_holder(job_id)
        if holder is not None and holder.pid == os.getpid():
            self.lock_path(job_id).unlink(missing_ok=True)

    def request_stop(self, job_id: str, reason: str) -> None:
        path = self.stop_request_path(job_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"reason": reason, "at": time.time(), "pid": os.getpid()}), encoding="utf-8")
        os.replace(tmp, path)

    def take_stop_request(self, job_id: str) -> str | None:
        """The reason of a pending `down` from another terminal, consumed; None when there is none."""
        path = self.stop_request_path(job_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            data = {}
        path.unlink(missing_ok=True)
        return str(data.get("reason") or "stopped by `lorarun down`")

    def load(self, job_id: str) -> JobState:
        path = self.job_dir(job_id) / "state.json"
        if not path.is_file():
            matches = (
                sorted(p.name for p in self.jobs_dir.glob(f"{job_id}*") if (p / "state.json").is_file())
                if self.jobs_dir.is_dir() and job_id
                else []
            )
            if len(matches) == 1:
                return self.load(matches[0])
            if len(matches) > 1:
                shown = ", ".join(matches[:8]) + (f" and {len(matches) - 8} more" if len(matches) > 8 else "")
                raise JobNotFound(f"{job_id!r} matches {len(matches)} jobs ({shown}); give more of the id")
            raise JobNotFound(f"no job {job_id!r} under {self.jobs_dir}; `lorarun status` lists the jobs")
        data = json.loads(path.read_text(encoding="utf-8"))
        data["history"] = tuple(tuple(h) for h in data.get("history", ()))
        data["leaked_instance_ids"] = tuple(data.get("leaked_instance_ids", ()))
        if data.get("phase") == "done" and _report_outcome(data.get("output_dir"), job_id) == "stopped":
            data["phase"] = "stopped"  # written before the phase existed (its report said stopped): read it as now
        known = {f.name for f in dataclasses.fields(JobState)}
        return JobState(**{k: v for k, v in data.items() if k in known})

    def all(self) -> list[JobState]:
        if not self.jobs_dir.is_dir():
            return []
        states = []
        for folder in self.jobs_dir.iterdir():
            if (folder / "state.json").is_file():
                try:
                    states.append(self.load(folder.name))
                except (ValueError, TypeError):
                    continue  # a half-written or foreign folder: status must still list the rest
        return sorted(states, key=lambda s: s.created_at)
