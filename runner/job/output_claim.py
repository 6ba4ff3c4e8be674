"""Two jobs never write the same output file (#24): the claims.

Before: the same job submitted twice at once (two terminals, a retry while the first still ran) wrote
`name.safetensors`, its checkpoints and grid into one folder; the second job's files replaced the first's, silently.

Now, before anything is rented, each job claims its outputs: one claim per output folder + `output.name`, a JSON
file under the lorarun home (`claims/`), created exclusively (O_EXCL) as the controller lock is
(`JobStore.acquire` in runner/state.py). A claim names the process that took it (pid, host, command), the job file
and, once their states exist, the jobs writing there. It is busy while that process lives or while one of its jobs
is unfinished (a job whose controller died still has outputs on its instance for `lorarun attach` to pull, so its
folder stays its own); otherwise it is taken over. Looking and taking happen under an flock on `<claim>.lock`, so
of two takers only one judges a dead claim and replaces it (the second then finds the first one's live claim).

A claim is told apart from another by a random token, not by the pid alone: two submits in one process (threads,
tests) are two claims. `attach`/`down` re-take the claim of their own job (the controller lock already makes them
its only driver), never another job's.

What submit and attach call is in runner/job/output_guard.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lorarun.runner.errors import JobNotFound, UserInputError
from lorarun.runner.state import JobStore, LockHolder


class OutputsTaken(UserInputError):
    """Another job writes (or an earlier run wrote) the files this job would write. Exit 2, before renting."""


@dataclass(frozen=True)
class OutputTarget:
    """What one job writes: `<output_dir>/<name>.safetensors`, `<name>-NNNNNN.safetensors`, `<name>_grid.png`."""

    output_dir: Path  # resolved, so `out` and `./out/../out` are one target
    name: str

    def describe(self) -> str:
        return f"{self.output_dir / self.name}.safetensors"


@dataclass(frozen=True)
class Claim:
    pid: int
    host: str
    command: str
    since: float
    output_dir: str
    name: str
    token: str = ""  # which claim this is (two in one process are two claims)
    job_file: str = ""
    job_ids: tuple[str, ...] = ()

    def holder(self) -> LockHolder:
        return LockHolder(self.pid, self.host, self.command, self.since)


class OutputClaims:
    """The claim files under `<lorarun home>/claims/` (the one home: `JobStore().home`, from `lorarun_home()`)."""

    def __init__(self, store: JobStore | None = None):
        self.store = store or JobStore()
        self.folder = self.store.home / "claims"

    def path(self, target: OutputTarget) -> Path:
        key = hashlib.sha256(f"{target.output_dir}\0{target.name}".encode()).hexdigest()[:32]
        return self.folder / f"{key}.json"

    @contextlib.contextmanager
    def _guard(self, target: OutputTarget):
        """One process (one thread) at a time looks at and changes this target's claim: without it, two takers
        could both judge the same dead claim and the second would move the first's new claim aside."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path(target).with_suffix(".lock"), "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes (also when the process dies)
            yield

    def read(self, target: OutputTarget) -> Claim | None:
        try:
            data = json.loads(self.path(target).read_text(encoding="utf-8"))
            fields = {f.name for f in dataclasses.fields(Claim)}
            data = {k: v for k, v in data.items() if k in fields}
            return Claim(**{**data, "job_ids": tuple(data.get("job_ids", ()))})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):  # unreadable (a crash mid-write): a dead holder, pid 0 is never alive
            return Claim(0, "?", "?", 0.0, str(target.output_dir), target.name)

    def busy_because(self, claim: Claim) -> str | None:
        """Who still holds `claim` (a live controller, an unfinished job), in words; None when it may be taken."""
        live = claim.pid != 0 and claim.holder().alive()
        for job_id in claim.job_ids:
            try:
                state = self.store.load(job_id)
            except (JobNotFound, OSError, ValueError):
                continue
            if not state.is_final:
                if live:
                    return f"job {job_id} ({state.name}), driven by {claim.holder().describe()}"
                return (
                    f"job {job_id} ({state.name}), unfinished ({state.phase}; `lorarun attach {job_id}` brings its "
                    f"outputs home, `lorarun down {job_id}` stops it)"
                )
        if live:
            what = f" of {claim.job_file}" if claim.job_file else ""
            jobs = f"job {', '.join(claim.job_ids)}, " if claim.job_ids else ""
            return f"{jobs}{claim.holder().describe()}{what}"
        return None

    def take(self, target: OutputTarget, *, command: str, job_file: str = "", job_ids: Sequence[str] = ()) -> Claim:
        """Claim `target`. Busy → OutputsTaken naming the holder; a dead claim, or one of `job_ids`' own (attach
        of a job whose submit died), is taken over."""
        me = Claim(
            os.getpid(),
            socket.gethostname(),
            command,
            time.time(),
            str(target.output_dir),
            target.name,
            token=secrets.token_hex(8),
            job_file=job_file,
            job_ids=tuple(job_ids),
        )
        with self._guard(target):
            return self._take(target, me, job_ids)

    def _take(self, target: OutputTarget, me: Claim, job_ids: Sequence[str]) -> Claim:
        path = self.path(target)
        for _ in range(5):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                current = self.read(target)
                if current is None:
                    continue  # released between our two looks
                own_job = bool(set(current.job_ids) & set(job_ids))
                why = None if own_job else self.busy_because(current)
                if why is not None:
                    raise OutputsTaken(
                        f"{target.describe()} is being written by {why}; pick another output folder (--out DIR, "
                        f"or --out auto for a fresh sub-folder) or another output.name"
                    ) from None  # the claim file existing is the expected case, not a cause worth chaining
                stale = path.with_name(f"{path.stem}.stale-{me.token}")
                try:
                    os.replace(path, stale)  # atomic: of two takers, one moves it, the other finds it gone
                    stale.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(dataclasses.asdict(me), fh)
            return me
        raise OutputsTaken(f"{target.describe()}: another job keeps claiming it; try again")

    def add_jobs(self, claim: Claim, job_ids: Sequence[str]) -> Claim:
        """Name the jobs that now write there (their states exist): the claim outlives this process while they are
        unfinished. Written atomically (temp file + rename), only while the claim is still ours."""
        with self._guard(OutputTarget(Path(claim.output_dir), claim.name)):
            return self._add_jobs(claim, job_ids)

    def _add_jobs(self, claim: Claim, job_ids: Sequence[str]) -> Claim:
        current = self.read(OutputTarget(Path(claim.output_dir), claim.name))
        if current is None or current.token != claim.token:
            return claim  # taken over meanwhile (we were thought dead): not ours to write
        updated = dataclasses.replace(current, job_ids=tuple(dict.fromkeys(current.job_ids + tuple(job_ids))))
        path = self.path(OutputTarget(Path(claim.output_dir), claim.name))
        tmp = path.with_name(f"{path.stem}.{claim.token}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(updated)), encoding="utf-8")
        os.replace(tmp, path)
        return updated

    def release(self, claim: Claim) -> None:
        """Let go, unless a job of the claim is unfinished (its outputs are still on its instance, for `attach`)."""
        with self._guard(OutputTarget(Path(claim.output_dir), claim.name)):
            self._release(claim)

    def _release(self, claim: Claim) -> None:
        current = self.read(OutputTarget(Path(claim.output_dir), claim.name))
        if current is None or current.token != claim.token:
            return  # taken over (we were thought dead) or already gone: not ours to remove
        for job_id in current.job_ids:
            try:
                if not self.store.load(job_id).is_final:
                    return
            except (JobNotFound, OSError, ValueError):
                continue
        self.path(OutputTarget(Path(claim.output_dir), claim.name)).unlink(missing_ok=True)
