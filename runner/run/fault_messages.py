"""Messages for faults that used to point the wrong way (#27): say what happened in the user's terms.

- a dataset file removed while it was being uploaded: which file vanished, and that nothing was lost and the machine
  was rented only briefly (before: `internal error: FileNotFoundError`);
- "outputs pulled so far are in …": only when something was pulled; otherwise that nothing had been saved yet.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from lorarun.runner.errors import PipelineError
from lorarun.runner.run.outputs_home import duration_text


class DatasetFileVanished(PipelineError):
    """A file the scan accepted was gone when the upload came to read it."""


@contextlib.contextmanager
def vanished_is_said(dataset_dir: Path, rented_seconds: Callable[[], float]) -> Iterator[None]:
    """Around an upload of `dataset_dir`: a local file missing by then becomes one clear line (the pipeline's
    teardown then destroys the instance as on every failure)."""
    try:
        yield
    except FileNotFoundError as exc:
        if not exc.filename:
            raise
        gone = Path(exc.filename)
        where = "the dataset" if _under(gone, dataset_dir) else "this laptop"
        raise DatasetFileVanished(
            f"{gone} vanished from {where} while it was being uploaded (deleted or moved during the upload). "
            f"Nothing was lost: no training had started, and the instance is destroyed now, after about "
            f"{duration_text(rented_seconds())} of renting. Put the file back (or run `lorarun validate` to see "
            f"the dataset as it is now), then submit again"
        ) from None


def pulled_so_far(job_dir: Path, output_dir: Path) -> str:
    """`2 output(s) pulled so far are in /out`, or that nothing had been saved (or pulled) yet."""
    announced = _announced_outputs(job_dir / "events.jsonl")
    home = sorted(rel for rel in announced if (output_dir / rel).is_file())
    if home:
        return f"{len(home)} output(s) pulled so far are in {output_dir}"
    if announced:
        return f"none of the {len(announced)} output(s) saved on the instance had been pulled yet"
    return "nothing was pulled: no output had been saved yet"


def pulled_so_far_for(ctx) -> str:
    """`pulled_so_far` for every job of a run (a `RunContext`)."""
    return "; ".join(pulled_so_far(ctx.store.job_dir(r.state.job_id), r.job.spec.output_dir) for r in ctx.runs)


def rented_seconds(ctx) -> float:
    """How long the run's instance has been rented so far (0 before the create returned)."""
    started = ctx.rental.started_at
    return ctx.clock.wall() - started if started else 0.0


def _announced_outputs(events: Path) -> set[str]:
    """The outputs the engine reported saving (events with a path and a sha256), as the controller logged them."""
    found: set[str] = set()
    try:
        lines = events.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("path") and event.get("sha256"):
            found.add(str(event["path"]))
    return found


def _under(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return False
