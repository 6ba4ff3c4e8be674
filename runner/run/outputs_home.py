"""Every output the manifest lists, home and verified, before the instance that made it may be destroyed (#11.5).

A problem on this side — a full disk, a read-only or unwritable folder, a file corrupted after the pull — is
retried where a retry can help (the file is pulled again from the instance, which still has it). What is still
not home afterwards raises `OutputsNotHome`: the pipeline then keeps the instance for its grace window (the
agent's self-destroy stays armed) and says exactly what to free or fix and that `lorarun attach` finishes the pull.
Every local write error of the pull counts, wherever it happens (#27, runner/run/local_writes.py).

A file that still differs after the pulls is checked on the instance too: when the instance's own copy no longer
matches what the engine recorded, pulling again (or keeping the instance) cannot help, and the message says that the
instance's copy is bad and what is home. A file whose bytes are what the engine wrote but that does not load is the
engine's problem, not a transfer's: it is reported by verification as before.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lorarun.runner.errors import PipelineError
from lorarun.runner.run.local_writes import describe, fix_advice, is_local_write_error
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.run.verify import OutputsCorrupt, VerifyReport, verify_outputs

ATTEMPTS = 3
RETRYABLE_PREFIXES = ("missing", "size ", "sha256 mismatch")  # verify.py's wording for bytes that differ


class OutputsNotHome(PipelineError):
    """Outputs the engine wrote could not be brought home intact because of this machine; the instance is kept."""


@dataclass(frozen=True)
class HomeResult:
    verification: VerifyReport
    problems: tuple[str, ...]  # one line per output still not home because of this laptop, saying what to fix
    bad_on_instance: tuple[str, ...] = ()  # outputs whose copy on the instance differs from the engine's record

    @property
    def complete(self) -> bool:
        return not self.problems

    def raise_if_bad_on_instance(self, output_dir: Path) -> None:
        """The instance's copy is corrupt: say so, and what is home, instead of pointing at this laptop's disk."""
        if not self.bad_on_instance:
            return
        good = [f.path for f in self.verification.files if f.ok]
        raise OutputsCorrupt(
            f"{', '.join(self.bad_on_instance)}: the instance's copy is corrupt (its sha256 no longer matches what "
            f"the engine recorded when it saved it), so pulling it again cannot help. Home and verified in "
            f"{output_dir}: {', '.join(good) if good else 'nothing'}"
        )


def bring_home(
    monitor: JobMonitor, output_dir: Path, *, sleep: Callable[[float], None], attempts: int = ATTEMPTS, progress=None
) -> HomeResult:
    """Pull, verify, pull again what differs; up to `attempts` rounds. `progress` goes to `pull_outputs`."""
    for attempt in range(1, attempts + 1):
        monitor.pull_outputs(progress=progress)
        verification = verify_outputs(output_dir, monitor.manifest_dict())
        again = [f.path for f in verification.files if f.error and f.error.startswith(RETRYABLE_PREFIXES)]
        if attempt == attempts:
            bad_there = _bad_on_instance(monitor, [r for r in again if r not in monitor.progress.local_errors])
            again = [r for r in again if r not in bad_there]
            return HomeResult(verification, _problems(monitor, output_dir, verification, again), tuple(bad_there))
        problems = _problems(monitor, output_dir, verification, again)
        if not problems:
            return HomeResult(verification, problems)
        for rel in again:
            monitor.progress.pulled.pop(rel, None)  # the instance still has it: fetch it whole again
            try:
                (output_dir / rel).unlink(missing_ok=True)
            except OSError as exc:  # a folder that turned read-only under us (#27): this laptop's problem
                if not is_local_write_error(exc):
                    raise
                monitor.progress.local_errors[rel] = describe(exc)
        sleep(2.0 * attempt)
    raise AssertionError("unreachable")


def _bad_on_instance(monitor: JobMonitor, rels: list[str]) -> list[str]:
    """Those of `rels` whose bytes on the instance differ from the manifest's sha256 (one `sha256sum` each)."""
    if not rels:
        return []
    expected = {str(e.get("path")): str(e.get("sha256", "")).lower() for e in monitor.manifest()}
    bad = []
    for rel in rels:
        result = monitor.transport.run(
            f"sha256sum {shlex.quote(monitor.layout.path('output', rel))}", timeout=600, check=False
        )
        there = result.stdout.split()[:1] if result.exit_code == 0 else []
        if there and expected.get(rel) and there[0].lower() != expected[rel]:
            bad.append(rel)
    return bad


def _problems(monitor: JobMonitor, output_dir: Path, verification: VerifyReport, again: list[str]) -> tuple[str, ...]:
    lines = []
    sizes = {f.path: f.size for f in verification.files}
    for rel, why in monitor.progress.local_errors.items():
        lines.append(f"{rel}: {why}{fix_advice(why, output_dir, sizes.get(rel, 0))}")
    checks = {f.path: f for f in verification.files}
    for rel in again:
        if rel not in monitor.progress.local_errors:
            lines.append(f"{rel}: {checks[rel].error} after {ATTEMPTS} pulls (check the disk under {output_dir})")
    return tuple(lines)


# ---- keeping the instance for the pull -------------------------------------------------------------------------
def instance_grace_seconds(job_dir: Path, default: float) -> float:
    """The grace window the job's agent really has: agent.json as it was sent (`--grace-seconds` at submit), not
    this process's default (an `attach` does not know the submit's options)."""
    try:
        value = float(json.loads((job_dir / "agent.json").read_text(encoding="utf-8"))["grace_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return default
    return value if value >= 0 else default


def duration_text(seconds: float) -> str:
    """`30 s`, `15 min`, `2.0 h`: what "about …" says."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def not_home_error(problems, *, instance_id: str, grace_seconds: float, job_id: str) -> OutputsNotHome:
    return OutputsNotHome(
        f"{len(problems)} output(s) could not be brought home: "
        + "; ".join(problems)
        + f". Instance {instance_id} is kept for its grace window (about {duration_text(grace_seconds)}) so "
        f"nothing is lost: fix that, then run `lorarun attach {job_id}` to finish the pull and destroy it"
    )


def local_write_problem(exc: OSError, output_dir: Path) -> str:
    """One problem line for a local write error raised anywhere in the pull (not only the file writes)."""
    why = describe(exc)
    return f"{exc.filename or output_dir}: {exc.strerror or exc}{fix_advice(why, output_dir)}"
