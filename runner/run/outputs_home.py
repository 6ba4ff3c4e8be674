"""Every output the manifest lists, home and verified, before the instance that made it may be destroyed (#11.5).

A problem on this side — a full disk, a folder without write permission, a file corrupted after the pull — is
retried where a retry can help (the file is pulled again from the instance, which still has it). What is still
not home afterwards raises `OutputsNotHome`: the pipeline then keeps the instance for its grace window (the
agent's self-destroy stays armed) and says exactly what to free or fix and that `lorarun attach` finishes the pull.
A file whose bytes are what the engine wrote but that does not load is the engine's problem, not a transfer's:
it is reported by verification as before, and pulling it again would change nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lorarun.runner.errors import PipelineError
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.run.verify import VerifyReport, verify_outputs

ATTEMPTS = 3
RETRYABLE_PREFIXES = ("missing", "size ", "sha256 mismatch")  # verify.py's wording for bytes that differ


class OutputsNotHome(PipelineError):
    """Outputs the engine wrote could not be brought home intact because of this machine; the instance is kept."""


@dataclass(frozen=True)
class HomeResult:
    verification: VerifyReport
    problems: tuple[str, ...]  # one line per output still not home, saying what to fix

    @property
    def complete(self) -> bool:
        return not self.problems


def bring_home(
    monitor: JobMonitor, output_dir: Path, *, sleep: Callable[[float], None], attempts: int = ATTEMPTS, progress=None
) -> HomeResult:
    """Pull, verify, pull again what differs; up to `attempts` rounds. `progress` goes to `pull_outputs`."""
    for attempt in range(1, attempts + 1):
        monitor.pull_outputs(progress=progress)
        verification = verify_outputs(output_dir, monitor.manifest_dict())
        again = [f.path for f in verification.files if f.error and f.error.startswith(RETRYABLE_PREFIXES)]
        problems = _problems(monitor, output_dir, verification, again)
        if not problems or attempt == attempts:
            return HomeResult(verification, problems)
        for rel in again:
            monitor.progress.pulled.pop(rel, None)  # the instance still has it: fetch it whole again
            (output_dir / rel).unlink(missing_ok=True)
        sleep(2.0 * attempt)
    raise AssertionError("unreachable")


def _problems(monitor: JobMonitor, output_dir: Path, verification: VerifyReport, again: list[str]) -> tuple[str, ...]:
    lines = []
    sizes = {f.path: f.size for f in verification.files}
    for rel, why in monitor.progress.local_errors.items():
        lines.append(f"{rel}: {why}{_advice(why, output_dir, sizes.get(rel, 0))}")
    checks = {f.path: f for f in verification.files}
    for rel in again:
        if rel not in monitor.progress.local_errors:
            lines.append(f"{rel}: {checks[rel].error} after {ATTEMPTS} pulls (check the disk under {output_dir})")
    return tuple(lines)


def _advice(why: str, output_dir: Path, size: int) -> str:
    if "No space" in why or "quota" in why.lower() or "too large" in why.lower():
        try:
            free = shutil.disk_usage(_existing(output_dir)).free
        except OSError:
            return f" — free at least {_mb(size)} in {output_dir}"
        return f" — free at least {_mb(size)} in {output_dir} ({_mb(free)} free now)"
    if "ermission" in why or "Read-only" in why:
        return f" — make {output_dir} writable"
    return ""


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mb(n: int) -> str:
    return f"{max(n, 1) / 1e6:.1f} MB"
