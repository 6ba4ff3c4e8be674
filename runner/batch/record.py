"""A batch on disk: `$LORARUN_HOME/batches/BATCH_ID.json`, which jobs belong to it and where each one went.

The job folders stay what they are (one per attempt: a job moved to another rental gets a new job id, its first
attempt's folder keeps the failed rental's instance id for `gc` and `status`); the batch file maps each job of the
batch to its attempts, the last one current. `status`, `logs`, `down`, `attach` and `batch.html` read it."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lorarun.runner.errors import JobNotFound
from lorarun.runner.state import JobState, JobStore

BATCH_PREFIX = "batch-"


@dataclass(frozen=True)
class BatchJob:
    name: str
    job_file: str
    attempts: tuple[str, ...]  # job ids, oldest first; the last is current
    rental: int  # the rental (1-based) it runs or ran on last

    @property
    def job_id(self) -> str:
        return self.attempts[-1]


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    provider: str
    rentals: int
    jobs: tuple[BatchJob, ...]
    created_at: float = field(default_factory=time.time)
    report: str | None = None  # batch.html, once written
    sweep: str | None = None  # the sweep file it came from

    def job(self, name: str) -> BatchJob:
        return next(j for j in self.jobs if j.name == name)


def new_batch_id() -> str:
    return f"{BATCH_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def is_batch_id(text: str | None) -> bool:
    return text is not None and text.startswith(BATCH_PREFIX)


class BatchStore:
    """Atomic writes (temp file + rename); one lock per process, since the rentals' threads update one record."""

    _lock = threading.Lock()

    def __init__(self, store: JobStore | None = None):
        self.jobs = store or JobStore()
        self.dir = self.jobs.home / "batches"

    def path(self, batch_id: str) -> Path:
        return self.dir / f"{batch_id}.json"

    def stop_request_path(self, batch_id: str) -> Path:
        return self.dir / f"{batch_id}.stop"

    def request_stop(self, batch_id: str, reason: str) -> None:
        """`lorarun down BATCH` while its controller runs: the controller polls this file."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stop_request_path(batch_id).write_text(reason, encoding="utf-8")

    def save(self, record: BatchRecord) -> BatchRecord:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(record.batch_id)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(record), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return record

    def load(self, batch_id: str) -> BatchRecord:
        path = self.path(batch_id)
        if not path.is_file():
            matches = sorted(p.stem for p in self.dir.glob(f"{batch_id}*.json")) if self.dir.is_dir() else []
            if len(matches) != 1:
                raise JobNotFound(
                    f"{batch_id!r} matches {len(matches)} batches; `lorarun status` lists them"
                    if matches
                    else f"no batch {batch_id!r} under {self.dir}; `lorarun status` lists the batches"
                )
            path = self.path(matches[0])
        data = json.loads(path.read_text(encoding="utf-8"))
        jobs = tuple(
            BatchJob(name=j["name"], job_file=j["job_file"], attempts=tuple(j["attempts"]), rental=int(j["rental"]))
            for j in data.pop("jobs")
        )
        known = {f.name for f in dataclasses.fields(BatchRecord)}
        return BatchRecord(jobs=jobs, **{k: v for k, v in data.items() if k in known and k != "jobs"})

    def all(self) -> list[BatchRecord]:
        if not self.dir.is_dir():
            return []
        records = []
        for p in self.dir.glob(f"{BATCH_PREFIX}*.json"):
            try:
                records.append(self.load(p.stem))
            except (ValueError, KeyError, TypeError):
                continue  # half-written or foreign: the rest still lists
        return sorted(records, key=lambda r: r.created_at)

    def moved(self, batch_id: str, name: str, new_job_id: str, rental: int) -> BatchRecord:
        """Record a job's new attempt (it moved to rental `rental`)."""
        with self._lock:
            record = self.load(batch_id)
            jobs = tuple(
                dataclasses.replace(j, attempts=j.attempts + (new_job_id,), rental=rental) if j.name == name else j
                for j in record.jobs
            )
            return self.save(dataclasses.replace(record, jobs=jobs))

    def set_report(self, batch_id: str, report: Path) -> BatchRecord:
        with self._lock:
            return self.save(dataclasses.replace(self.load(batch_id), report=str(report)))

    def states(self, record: BatchRecord) -> list[JobState]:
        """Each job's current attempt's state, in the batch's order."""
        return [self.jobs.load(j.job_id) for j in record.jobs]
