"""What `submit`, `sweep` and `attach` call so that two jobs never write the same output file (#24).

- Each job claims `<output folder> + output.name` before anything is rented (runner/job/output_claim.py), for as long
  as it runs; a second job aiming there is refused in one line naming the job that writes there (exit 2).
- Two jobs of one batch aiming at the same files are refused before any claim is taken.
- A folder that holds an earlier, finished run's files of that name (`name.safetensors`, its checkpoints
  `name-NNNNNN.safetensors`, `name_grid.png`, the report of that name) is never written over unasked: the job is
  refused saying which file, unless `--overwrite` makes the replacing explicit.
- `--out auto` / `output.unique: true`: a fresh sub-folder `<output.dir>/<name>-<n>` instead, created here
  exclusively (mkdir), so two jobs starting at once get two folders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lorarun.runner.job.output_claim import Claim, OutputClaims, OutputsTaken, OutputTarget

AUTO = "auto"  # `--out auto`
MAX_AUTO = 10_000
CHECKPOINT_DIGITS = 6  # name-000002.safetensors (image/engine saves every_n_epochs with 6 digits, as kohya does)


def target_of(job) -> OutputTarget:
    return OutputTarget(Path(job.spec.output_dir).resolve(), job.spec.output.name)


def earlier_outputs(target: OutputTarget) -> list[Path]:
    """Files an earlier run of this name left in the folder: the LoRA, its checkpoints, its grid, its report."""
    folder = target.output_dir
    if not folder.is_dir():
        return []
    found = [folder / f"{target.name}.safetensors", folder / f"{target.name}_grid.png"]
    digits = "[0-9]" * CHECKPOINT_DIGITS
    found += sorted(folder.glob(f"{_glob_escape(target.name)}-{digits}.safetensors"))
    found += [p for p in (folder / "report.json", folder / f"{target.name}.report.json") if _report_of(p, target.name)]
    return [p for p in found if p.is_file()]


def _report_of(path: Path, name: str) -> bool:
    """Is `path` a report about the LoRA `name` (runner/run/report_files.py names the output in it)?"""
    from lorarun.runner.run.report_files import report_output_name

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and report_output_name(data) == name


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


def outputs_notice(job, store: OutputClaims | None = None) -> str | None:
    """What `lorarun validate` says ahead of `submit` (nothing claimed): the files are being written by another job,
    or an earlier run's files are there. `--out auto` / `output.unique` jobs write into a fresh folder: none."""
    if job.spec.output.unique:
        return None
    store = store or OutputClaims()
    target = target_of(job)
    claim = store.read(target)
    why = store.busy_because(claim) if claim is not None else None
    if why is not None:
        return f"{target.describe()} is being written by {why}; submit refuses it (--out DIR, --out auto, output.name)"
    old = earlier_outputs(target)
    if old:
        return (
            f"{old[0]} is an earlier run's output; submit refuses to write over it unless --overwrite (or --out auto)"
        )
    return None


@dataclass(frozen=True)
class ClaimedJobs:
    jobs: tuple  # the ValidatedJobs, `--out auto` folders filled in
    claims: tuple[Claim, ...]  # claim i is job i's
    store: OutputClaims

    def add_runs(self, runs: Iterable) -> None:
        """After the job states exist (Pipeline.start, BatchRun): each run's job id joins its target's claim, so
        the claim outlives this process while the job is unfinished."""
        by_target = {OutputTarget(Path(c.output_dir), c.name): c for c in self.claims}
        for run in runs:
            claim = by_target.get(target_of(run.job))
            if claim is not None:
                self.store.add_jobs(claim, [run.state.job_id])


@contextlib.contextmanager
def claimed_outputs(
    jobs: Sequence, *, auto: bool = False, overwrite: bool = False, command: str = "submit", store=None
):
    """Claim every job's outputs before anything is rented, for as long as the block runs (see the module doc)."""
    store = store or OutputClaims()
    made: list[OutputTarget] = []
    resolved = []
    taken: list[Claim] = []
    try:
        fresh = [bool(auto or job.spec.output.unique) for job in jobs]
        for job, is_fresh in zip(jobs, fresh):
            if is_fresh:
                job, claim = _claim_fresh(job, store, command, made)
                taken.append(claim)
            resolved.append(job)
        plain = [(j, target_of(j)) for j, is_fresh in zip(resolved, fresh) if not is_fresh]
        _refuse_duplicates([j for j, _ in plain], [t for _, t in plain])
        for job, target in plain:
            taken.append(store.take(target, command=command, job_file=str(job.spec.source)))
            old = [] if overwrite else earlier_outputs(target)
            if old:
                raise OutputsTaken(
                    f"{old[0]} is an earlier run's output ({len(old)} file(s) of {target.name} there); lorarun "
                    f"does not write over it unasked: --out auto (a fresh sub-folder), another --out folder or "
                    f"output.name, or --overwrite to replace them"
                )
        yield ClaimedJobs(tuple(resolved), tuple(taken), store)
    finally:
        for claim in taken:
            store.release(claim)
        for target in made:
            if store.read(target) is None:  # a job that left its claim (unfinished) keeps its folder for attach
                with contextlib.suppress(OSError):
                    target.output_dir.rmdir()  # only when empty: a job refused or declined before writing leaves none


def _claim_fresh(job, store: OutputClaims, command: str, made: list[OutputTarget]):
    """`--out auto`: the next free `<dir>/<name>-<n>` and its claim. A folder that exists is skipped; one whose
    claim is still held (an unfinished job's, its folder removed while empty) is skipped too."""
    for _ in range(MAX_AUTO):
        sub = fresh_subfolder(job.spec.output_dir, job.spec.output.name)
        target = OutputTarget(sub, job.spec.output.name)
        made.append(target)
        try:
            claim = store.take(target, command=command, job_file=str(job.spec.source))
        except OutputsTaken:
            continue
        return dataclasses.replace(job, spec=job.spec.with_overrides(out=sub, validate=False)), claim
    raise OutputsTaken(f"{job.spec.output_dir}: no free sub-folder {job.spec.output.name}-N; clean some up")


@contextlib.contextmanager
def claimed_for_attach(job, job_id: str, *, command: str, store=None):
    """`attach`/`down`: the job's own claim, taken over from its dead submit; refused while another job writes
    there. No earlier-run check: the files there are this job's own."""
    store = store or OutputClaims()
    claim = store.take(target_of(job), command=command, job_file=str(job.spec.source), job_ids=(job_id,))
    try:
        yield claim
    finally:
        store.release(claim)


def _refuse_duplicates(jobs: Sequence, targets: Sequence[OutputTarget]) -> None:
    seen: dict[OutputTarget, str] = {}
    for job, target in zip(jobs, targets):
        source = str(job.spec.source)
        if target in seen:
            raise OutputsTaken(
                f"{seen[target]} and {source} would both write {target.describe()}; give each job its own "
                f"output.name or output.dir (or output.unique: true)"
            )
        seen[target] = source
