"""Job state on the laptop: one folder per job under the lorarun home, with `state.json` written *before* each
phase starts, so a crash at any point leaves a record that `status`, `attach` and `gc` can act on.

Layout of `$LORARUN_HOME/jobs/<job_id>/`: state.json, job file copy, engine_config.json, events.jsonl (local copy
of the engine's events), ssh/ (the per-job key and pinned host key), report files once finished.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import JobNotFound

PHASES = ("created", "validate", "estimate", "provision", "wait", "upload", "run", "monitor", "finish",
          "teardown", "done", "failed", "kept")
FINAL_PHASES = ("done", "failed", "kept")


def controller_alive(state: "JobState") -> bool:
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


def lorarun_home() -> Path:
    """`$LORARUN_HOME`, else `~/.lorarun`. Tests point it at a temporary folder."""
    return Path(os.environ.get("LORARUN_HOME") or Path.home() / ".lorarun").expanduser()


def new_job_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "job"
    return f"{slug}-{secrets.token_hex(3)}"


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
        return self.update(state, phase=phase, message=message, history=history)

    def load(self, job_id: str) -> JobState:
        path = self.job_dir(job_id) / "state.json"
        if not path.is_file():
            matches = [p.name for p in self.jobs_dir.glob(f"{job_id}*")] if self.jobs_dir.is_dir() else []
            if len(matches) == 1:
                return self.load(matches[0])
            raise JobNotFound(f"no job {job_id!r} under {self.jobs_dir}; `lorarun status` lists the jobs")
        data = json.loads(path.read_text(encoding="utf-8"))
        data["history"] = tuple(tuple(h) for h in data.get("history", ()))
        data["leaked_instance_ids"] = tuple(data.get("leaked_instance_ids", ()))
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
