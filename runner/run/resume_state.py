"""The engine's resume state, kept home while an interruptible rental trains, and sent to the next rental.

The engine saves, with every checkpoint, a complete resume state under `<work>/state/step-N/` (LoRA weights,
optimizer, scheduler, each rank's RNG, the step/epoch/batch position) and names the newest in `state/latest.json`
(image/engine/state.py). A run restarted on that state continues bit-identically (tests/image/engine/test_resume.py).
When the provider takes an interruptible machine back, its disk goes with it; so the laptop keeps the newest state
(`<job dir>/resume/`), and the next rental gets it back together with the events so far and the last checkpoint.
At most one save interval of training is lost.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import time
from pathlib import Path

from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run.monitor import RESUMED_EVENT
from lorarun.sshlink.transport import Transport

LATEST = "latest.json"  # image/engine/state.py LATEST
RESUME_DIR = "resume"


def remote_state_root(layout: RemoteLayout) -> str:
    return layout.path("work", "state")


def home_state(job_dir: Path) -> tuple[Path, dict] | None:
    """(folder, progress) of the newest complete state at home, or None."""
    root = job_dir / RESUME_DIR
    try:
        name = json.loads((root / LATEST).read_text(encoding="utf-8"))["dir"]
        folder = root / name
        progress = json.loads((folder / "progress.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder, progress


def pull_newest(transport: Transport, layout: RemoteLayout, job_dir: Path) -> int | None:
    """Bring the instance's newest resume state home unless it already is. Returns its step when one was pulled.

    A state folder is complete once `latest.json` names it (the engine renames it into place first). The engine
    may replace it while we read; a file gone mid-pull leaves the previous state at home, and the next round
    tries again."""
    raw = transport.read_bytes(posixpath.join(remote_state_root(layout), LATEST))
    if not raw:
        return None
    try:
        name = str(json.loads(raw)["dir"])
    except (ValueError, KeyError, TypeError):
        return None
    if not name.startswith("step-") or "/" in name:
        return None  # the instance is not trusted with the laptop's paths
    root = job_dir / RESUME_DIR
    have = home_state(job_dir)
    if have is not None and have[0].name == name:
        return None
    remote = posixpath.join(remote_state_root(layout), name)
    listing = transport.run(f"ls -1 {_q(remote)}", timeout=60, check=False)
    files = [f for f in listing.stdout.split() if f and "/" not in f and not f.startswith(".")]
    if listing.exit_code != 0 or "progress.json" not in files:
        return None
    staging = root / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for f in files:
            transport.get_file(posixpath.join(remote, f), staging / f)
        progress = json.loads((staging / "progress.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        shutil.rmtree(staging, ignore_errors=True)  # replaced under us: the next round fetches the newer one
        return None
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    tmp = root / f".{LATEST}.tmp"
    tmp.write_text(json.dumps({"dir": name}), encoding="utf-8")
    os.replace(tmp, root / LATEST)
    for old in root.iterdir():
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return int(progress.get("global_step") or 0)


def push(transport: Transport, layout: RemoteLayout, job_dir: Path, output_dir: Path) -> int | None:
    """Before the agent starts on a new rental: the state at home, the events so far (the engine appends to them,
    and the monitor reads on from where the laptop's copy ends) and the last checkpoint home. Returns the step the
    engine will resume from, or None when there is no state (a fresh start)."""
    events = job_dir / "events.jsonl"
    if events.is_file():
        # A line that ends whatever the earlier rental ended with (its "finished" before a cut final pull): the
        # monitor follows the new engine, not the old outcome.
        found = home_state(job_dir)
        step = int(found[1].get("global_step") or 0) if found else 0
        marker = {"event": RESUMED_EVENT, "t": time.time(), "from_step": step}
        with events.open("ab") as log:
            log.write(json.dumps(marker).encode() + b"\n")
        # Always, state or not: the monitor reads the instance's events from where the laptop's copy ends.
        transport.run(f"mkdir -p {_q(layout.output)}", timeout=60)
        transport.put_file(events, layout.events)
    found = home_state(job_dir)
    if found is None:
        return None
    folder, progress = found
    remote = posixpath.join(remote_state_root(layout), folder.name)
    transport.run(f"mkdir -p {_q(remote)} {_q(layout.output)}", timeout=60)
    for f in sorted(folder.iterdir()):
        if f.is_file():
            transport.put_file(f, posixpath.join(remote, f.name))
    latest = job_dir / RESUME_DIR / LATEST
    transport.put_file(latest, posixpath.join(remote_state_root(layout), LATEST))
    step = int(progress.get("global_step") or 0)
    checkpoint = last_checkpoint(events, step)
    if checkpoint is not None and (output_dir / checkpoint).is_file():
        transport.put_file(output_dir / checkpoint, layout.path("output", checkpoint))
    return step


def last_checkpoint(events: Path, step: int) -> str | None:
    """The checkpoint file the engine wrote at `step` (from its events), as a path relative to the output folder."""
    try:
        lines = events.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    found = None
    total = None
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "started" and event.get("total_steps"):
            total = int(event["total_steps"])
        # Not the final file (the last step's): the run resumed there saves it again, with its samples and grid —
        # given the final file, the engine would take the run as done and skip them.
        final = total is not None and step >= total
        if event.get("event") == "checkpoint" and event.get("step") == step and event.get("path") and not final:
            path = str(event["path"])
            if not path.startswith("/") and ".." not in Path(path).parts:
                found = path
    return found


def _q(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"
