"""Two jobs never write the same output file (#24).

Before: the same job submitted twice at once (two terminals, a retry while the first still ran) wrote
`name.safetensors`, its checkpoints and grid into one folder; the second job's files replaced the first's, silently.

Now, before anything is rented, each job claims its outputs: one claim per output folder + `output.name`, a JSON
file under the lorarun home (`claims/`), created exclusively (O_EXCL) as the controller lock is (runner/state.py).
A claim names the process that took it and, once they exist, the jobs writing there. It is busy while that process
lives or while one of its jobs is unfinished (a job whose controller died still has outputs on its instance for
`lorarun attach` to pull, so its folder stays its own); otherwise it is taken over, moved aside atomically so that
two takers cannot both win. A second job aiming at busy files is refused in one line naming the job, exit 2.

A folder that holds an earlier, finished run's files (`name.safetensors`, `name-000002.safetensors`, `name_grid.png`)
is never written over unasked: the job is refused saying which file, unless `--overwrite` makes the replacing
explicit. `--out auto` / `output.unique: true` picks a fresh sub-folder `<dir>/<name>-<n>` instead (created here,
exclusively, so two jobs starting at once get different ones).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lorarun.runner.errors import JobNotFound, UserInputError
from lorarun.runner.state import JobStore, LockHolder

AUTO = "auto"  # `--out auto`
MAX_AUTO = 10_000


class OutputsTaken(UserInputError):
    """Another job writes (or an earlier run wrote) the files this job would write."""


@dataclass(frozen=True)
class OutputTarget:
    output_dir: Path  # resolved
    name: str

    def describe(self) -> str:
        return f"{self.output_dir}/{self.name}*"


@dataclass(frozen=True)
class Claim:
    pid: int
    host: str
    command: str
    since: float
    output_dir: str
    name: str
    job_ids: tuple[str, ...] = ()

    def holder(self) -> LockHolder:
        return LockHolder(self.pid, self.host, self.command, self.since)


class OutputClaims:
    def __init__(self, store: JobStore | None = None):
        self.store = store or JobStore()
        self.folder = self.store.home / "claims"

    def path(self, target: OutputTarget) -> Path:
        key = hashlib.sha256(f"{target.output_dir}\0{target.name}".encode()).hexdigest()[:32]
        return self.folder / f"{key}.json"

    def read(self, target: OutputTarget) -> Claim | None:
        try:
            data = json.loads(self.path(target).read_text(encoding="utf-8"))
            return Claim(**{**data, "job_ids": tuple(data.get("job_ids", ()))})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            return Claim(0, "?", "?", 0.0, str(target.output_dir), target.name)  # unreadable: a dead holder

    def busy_because(self, claim: Claim) -> str | None:
        """Why `claim` still holds its files (a running controller, an unfinished job), or None when it is dead."""
        for job_id in claim.job_ids:
            try:
                state = self.store.load(job_id)
            except (JobNotFound, OSError, ValueError):
                continue
            if not state.is_final:
                running = claim.holder().alive() and claim.pid != 0
                how = (
                    f"driven by {claim.holder().describe()}"
                    if running
                    else f"unfinished ({state.phase}): `lorarun attach {job_id}` finishes it, `lorarun down {job_id}` "
                    f"stops it"
                )
                return f"job {job_id} ({state.name}), {how}"
        if claim.pid and claim.holder().alive() and (claim.pid, claim.host) != (os.getpid(), socket.gethostname()):
            return f"{claim.holder().describe()}"
        return None

    def take(self, target: OutputTarget, *, command: str, job_ids: Sequence[str] = ()) -> Claim:
        """Claim `target` for this process (and `job_ids`). Busy → OutputsTaken naming the holder; a dead claim, or
        one of our own jobs (`attach` of a job whose submit died), is taken over."""
        me = Claim(os.getpid(), socket.gethostname(), command, time.time(), str(target.output_dir), target.name)
        me = dataclasses.replace(me, job_ids=tuple(job_ids))
        path = self.path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                current = self.read(target)
                if current is None:
                    continue  # released between our two looks
                ours = set(current.job_ids) & set(job_ids)
                why = None if ours else self.busy_because(current)
                if why is not None:
                    raise OutputsTaken(
                        f"{target.describe()} is being written by {why}; give this job another output.name or "
                        f"--out folder, or --out auto for a fresh sub-folder"
                    ) from None
                stale = path.with_name(f"{path.stem}.stale-{me.pid}")
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

    def add_jobs(self, target: OutputTarget, job_ids: Sequence[str]) -> None:
        """Name the jobs that now write there (their state exists): the claim outlives this process while they
        are unfinished."""
        claim = self.read(target)
        if claim is None or (claim.pid, claim.host) != (os.getpid(), socket.gethostname()):
            return
        updated = dataclasses.replace(claim, job_ids=tuple(dict.fromkeys(claim.job_ids + tuple(job_ids))))
        tmp = self.path(target).with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(updated)), encoding="utf-8")
        os.replace(tmp, self.path(target))

    def release(self, target: OutputTarget) -> None:
        """Let go, unless a job of the claim is still unfinished (outputs held on its instance for `attach`)."""
        claim = self.read(target)
        if claim is None or (claim.pid, claim.host) != (os.getpid(), socket.gethostname()):
            return
        for job_id in claim.job_ids:
            try:
                if not self.store.load(job_id).is_final:
                    return
            except (JobNotFound, OSError, ValueError):
                continue
        self.path(target).unlink(missing_ok=True)


def earlier_outputs(target: OutputTarget) -> list[Path]:
    """Files an earlier run of this name left in the folder: the LoRA, its checkpoints, its grid."""
    folder = target.output_dir
    if not folder.is_dir():
        return []
    found = [folder / f"{target.name}.safetensors", folder / f"{target.name}_grid.png"]
    found += sorted(folder.glob(f"{_glob_escape(target.name)}-[0-9][0-9][0-9][0-9][0-9][0-9].safetensors"))
    return [p for p in found if p.is_file()]


def fresh_subfolder(base: Path, name: str) -> Path:
    """`<base>/<name>-<n>`, the first that does not exist yet, created exclusively (two jobs get two folders)."""
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1, MAX_AUTO):
        candidate = base / f"{name}-{n}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate.resolve()
    raise OutputsTaken(f"{base}: {MAX_AUTO} sub-folders named {name}-N already; clean some up")


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


# ---- what submit and attach call ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimedJobs:
    jobs: tuple  # the ValidatedJobs, with `--out auto` folders filled in
    targets: tuple[OutputTarget, ...]
    claims: OutputClaims

    def add_jobs(self, job_ids: Sequence[str]) -> None:
        """After the job states exist (Pipeline.start): job i writes to target i."""
        for target, job_id in zip(self.targets, job_ids):
            self.claims.add_jobs(target, [job_id])


@contextlib.contextmanager
def claimed_outputs(jobs, *, auto: bool = False, overwrite: bool = False, command: str = "submit", claims=None):
    """Claim every job's outputs before anything is rented, for as long as the block runs (see the module doc).
    Refusals are `OutputsTaken` (exit 2): two jobs of the batch aiming at the same files, files a running or
    unfinished job writes, an earlier run's files without `overwrite`."""
    claims = claims or OutputClaims()
    made: list[Path] = []
    resolved = []
    for job in jobs:
        if auto or job.spec.output.unique:
            sub = fresh_subfolder(job.spec.output_dir, job.spec.output.name)
            made.append(sub)
            job = dataclasses.replace(job, spec=job.spec.with_overrides(out=sub, validate=False))
        resolved.append(job)
    targets = tuple(OutputTarget(Path(j.spec.output_dir).resolve(), j.spec.output.name) for j in resolved)
    taken: list[OutputTarget] = []
    try:
        _refuse_duplicates(resolved, targets)
        for target in targets:
            claims.take(target, command=command)
            taken.append(target)
            old = [] if overwrite else earlier_outputs(target)
            if old:
                raise OutputsTaken(
                    f"{old[0]} is an earlier run's output ({len(old)} file(s) named {target.name}* in "
                    f"{target.output_dir}); lorarun does not write over it unasked: give this job another "
                    f"output.name or --out folder, --out auto for a fresh sub-folder, or --overwrite to replace them"
                )
        yield ClaimedJobs(tuple(resolved), targets, claims)
    finally:
        for target in taken:
            claims.release(target)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a job refused before it wrote anything leaves no folder


@contextlib.contextmanager
def claimed_for_attach(job, job_id: str, *, command: str, claims=None):
    """`attach`/`down`: the job's own claim, taken over from its dead submit; refused while another job writes
    there. The earlier-run check does not apply: these are the job's own files."""
    claims = claims or OutputClaims()
    target = OutputTarget(Path(job.spec.output_dir).resolve(), job.spec.output.name)
    claims.take(target, command=command, job_ids=(job_id,))
    try:
        yield target
    finally:
        claims.release(target)


def _refuse_duplicates(jobs, targets: Sequence[OutputTarget]) -> None:
    seen: dict[OutputTarget, str] = {}
    for job, target in zip(jobs, targets):
        source = str(job.spec.source)
        if target in seen:
            raise OutputsTaken(
                f"{seen[target]} and {source} would both write {target.describe()}; give each job its own "
                f"output.name or output.dir (or output.unique: true)"
            )
        seen[target] = source
