"""What the browser shows, built from the same files `lorarun status` and `logs` read: each job's `state.json`, its
local copy of the engine's events (`events.jsonl`, appended by the controller as it follows the job), the outputs
already home in the job's output folder and, once the job ended, its `report.json`.

Read-only: nothing here writes a job's files, so the UI can watch a job whatever controller drives it. Every value
is plain JSON; the page renders each one as text (never as HTML), so a job named `<script>` shows as text.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorarun.runner.run.monitor import local_output_path, read_jsonl
from lorarun.runner.run.report import downsample, loss_points
from lorarun.runner.run.report_files import find_report, html_beside
from lorarun.runner.state import JobState, JobStore, controller_alive

EVENTS_SHOWN = 200  # the events log on the job page: the latest ones (`lorarun logs` has them all)
FILES_SHOWN = 500  # an output folder with thousands of files still answers quickly
CHOSEN_FILE = "chosen_checkpoint.json"  # written by the UI's "stop and keep this checkpoint" (runner/ui/actions.py)


@dataclass(frozen=True)
class InstanceView:
    """The instance as the user must judge it: `attention` puts the job at the top of the list, in red."""

    id: str | None
    state: str  # none | up | destroyed | unconfirmed | orphaned | kept
    text: str
    attention: bool


def instance_view(state: JobState, driven: bool | None = None) -> InstanceView:
    """Same reading as `lorarun status`, plus one case it leaves implicit: a live instance that no controller
    follows (detached, or its `lorarun` died) bills until its lease ends unless someone acts. `driven`: whether a
    live controller holds the job (its lock: `attach`, `down`), else read from the state's controller pid."""
    iid = state.instance_id
    if not iid:
        return InstanceView(None, "none", "no instance", False)
    if state.instance_destroyed:
        return InstanceView(iid, "destroyed", f"{iid}: destroyed (confirmed by {state.provider})", False)
    if state.phase == "kept":
        return InstanceView(iid, "kept", f"{iid}: KEPT on purpose, still billing", True)
    if state.is_final:
        return InstanceView(iid, "unconfirmed", f"{iid}: NOT confirmed destroyed", True)
    if not (controller_alive(state) if driven is None else driven):
        return InstanceView(iid, "orphaned", f"{iid}: up, no controller attached", True)
    return InstanceView(iid, "up", f"{iid}: up", False)


@dataclass(frozen=True)
class Training:
    """What the engine's events say so far (the controller appends them to the job's events.jsonl)."""

    step: int | None
    total_steps: int | None
    epoch: int | None
    loss: float | None
    it_s: float | None
    outcome: str | None  # finished | failed | stopped
    reason: str
    phases: dict[str, list]  # model_download, caching_latents, sampling …: [done, total, unit]


def training(events: list[dict]) -> Training:
    step = total = epoch = None
    loss = it_s = None
    outcome, reason = None, ""
    phases: dict[str, list] = {}
    for e in events:
        kind = e.get("event")
        if kind == "step":
            phases.clear()  # caching, download, sampling: over once steps run (what shows is what goes on now)
            step, epoch = _int(e.get("step"), step), _int(e.get("epoch"), epoch)
            total = _int(e.get("total_steps"), total)
            loss, it_s = _num(e.get("loss"), loss), _num(e.get("it_s"), it_s)
        elif kind == "started":
            total = _int(e.get("total_steps"), total)
        elif kind == "progress" and e.get("phase"):
            phases[str(e["phase"])] = [_int(e.get("done"), 0), _int(e.get("total"), None), str(e.get("unit") or "")]
        elif kind in ("finished", "failed", "stopped"):
            outcome, reason = kind, str(e.get("reason") or e.get("message") or "")
            step, total = _int(e.get("step"), step), _int(e.get("total_steps"), total)
    return Training(step, total, epoch, loss, it_s, outcome, reason, phases)


def _int(value: Any, default: int | None) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _num(value: Any, default: float | None) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


class EventCache:
    """Parsed events per job, re-read only when the file changed (the page asks every second)."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int], list[dict]]] = {}

    def events(self, path: Path) -> list[dict]:
        try:
            st = path.stat()
        except FileNotFoundError:
            return []
        key = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(path)
        if hit and hit[0] == key:
            return hit[1]
        events = read_jsonl(path)
        self._cache[path] = (key, events)
        return events


def read_report(state: JobState) -> dict:
    # A report of another job in a shared output folder is not this job's (runner/run/report_files.py).
    return find_report(state.output_dir, state.job_id)[1]


def report_html_name(state: JobState) -> str | None:
    """The file name of this job's report.html in its output folder (`<name>.report.html` beside another's)."""
    path, _ = find_report(state.output_dir, state.job_id)
    return html_beside(path).name if path is not None and html_beside(path).is_file() else None


def cost_view(state: JobState, train: Training, report: dict, now: float) -> dict:
    """$ spent from the instance's price and the time it has been rented (provision → teardown), the way the
    provider bills; the report's actual cost once there is one. `projected` continues the current pace."""
    price = state.price_per_hour
    rented = next((t for phase, t in state.history if phase == "provision"), None)
    ended = None
    if state.is_final or state.instance_destroyed:
        ended = next(
            (t for phase, t in reversed(state.history) if phase in ("done", "stopped", "failed", "kept")), None
        )
    spent = None
    if price is not None and rented is not None and state.instance_id:
        spent = price * max(0.0, (ended or now) - rented) / 3600.0
    actual = (report.get("cost") or {}).get("actual")
    if isinstance(actual, (int, float)):
        spent = float(actual)
    projected = None
    if spent is not None and not state.is_final and train.it_s and train.total_steps and train.step is not None:
        remaining_s = max(0, train.total_steps - train.step) / train.it_s
        projected = spent + (price or 0.0) * remaining_s / 3600.0
    return {
        "price_per_hour": price,
        "predicted": state.predicted_cost,
        "spent": spent,
        "actual": actual if isinstance(actual, (int, float)) else None,
        "projected": projected,
        "difference_fraction": (report.get("cost") or {}).get("difference_fraction"),
        "seconds_per_step": report.get("seconds_per_step"),
        "timings": report.get("timings") or {},
    }


def job_row(store: JobStore, state: JobState, cache: EventCache, now: float | None = None) -> dict:
    """One line of the jobs list."""
    now = time.time() if now is None else now
    train = training(cache.events(store.job_dir(state.job_id) / "events.jsonl"))
    holder = store.lock_holder(state.job_id)
    live_holder = holder if holder is not None and holder.pid and holder.alive() else None
    inst = instance_view(state, driven=live_holder is not None or controller_alive(state))
    return {
        "id": state.job_id,
        "name": state.name,
        "provider": state.provider,
        "gpu": state.gpu,
        "phase": state.phase,
        "final": state.is_final,
        "message": state.message,
        "step": train.step,
        "total_steps": train.total_steps,
        "cost": cost_view(state, train, read_report(state), now),
        "instance": inst.__dict__,
        "controller": live_holder.describe() if live_holder else None,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
    }


def jobs_list(store: JobStore, cache: EventCache, now: float | None = None) -> list[dict]:
    """Instances that need the user first (not confirmed destroyed, kept, orphaned), then the newest jobs."""
    rows = [job_row(store, state, cache, now) for state in store.all()]
    rows.sort(key=lambda r: r["created_at"], reverse=True)
    rows.sort(key=lambda r: not r["instance"]["attention"])  # stable: newest first inside each group
    return rows


def job_detail(store: JobStore, state: JobState, cache: EventCache, now: float | None = None) -> dict:
    """The job page: the row, plus loss curve, checkpoints with their samples, grid, events, files, report."""
    now = time.time() if now is None else now
    events = cache.events(store.job_dir(state.job_id) / "events.jsonl")
    train = training(events)
    out = Path(state.output_dir)
    row = job_row(store, state, cache, now)
    row.update(
        {
            "job_file": state.job_file,
            "output_dir": state.output_dir,
            "history": [list(h) for h in state.history],
            "epoch": train.epoch,
            "loss": train.loss,
            "it_s": train.it_s,
            "eta_s": _eta(train),
            "outcome": train.outcome,
            "reason": train.reason,
            "phases": train.phases,
            "loss_curve": [[p.step, p.loss] for p in downsample(loss_points(events))],
            "checkpoints": checkpoints(events, out),
            "grid": _latest_grid(events, out),
            "events": events[-EVENTS_SHOWN:],
            "events_total": len(events),
            "files": files_home(out),
            "report": report_html_name(state),
            "chosen": chosen_checkpoint(store, state.job_id),
        }
    )
    return row


def _eta(train: Training) -> float | None:
    if train.outcome or not (train.it_s and train.total_steps and train.step is not None):
        return None
    return max(0, train.total_steps - train.step) / train.it_s


def _home(out: Path, rel: Any) -> bool:
    if not isinstance(rel, str):
        return False
    local = local_output_path(out, rel)
    return local is not None and local.is_file()


def checkpoints(events: list[dict], out: Path) -> list[dict]:
    """Each checkpoint with the samples rendered at its step (the engine samples right after it saves), newest
    first; `home` says whether the file is on this laptop yet (the controller pulls each as soon as it exists)."""
    rows: dict[int, dict] = {}
    for e in events:
        kind, step = e.get("event"), _int(e.get("step"), None)
        if kind not in ("checkpoint", "sample") or step is None or not isinstance(e.get("path"), str):
            continue
        row = rows.setdefault(step, {"step": step, "epoch": None, "path": None, "kind": None, "samples": []})
        if kind == "checkpoint":
            row.update(epoch=_int(e.get("epoch"), None), path=e["path"], kind=e.get("kind"), home=_home(out, e["path"]))
        else:
            row["samples"].append({"path": e["path"], "home": _home(out, e["path"])})
    for row in rows.values():
        row.setdefault("home", False)
    return sorted(rows.values(), key=lambda r: r["step"], reverse=True)


def _latest_grid(events: list[dict], out: Path) -> dict | None:
    grids = [e for e in events if e.get("event") == "grid" and isinstance(e.get("path"), str)]
    if not grids:
        return None
    e = grids[-1]
    return {"path": e["path"], "home": _home(out, e["path"]), "prompt": e.get("prompt"), "t": e.get("t")}


def files_home(out: Path) -> list[dict]:
    """The files in the output folder (what is home), relative paths, newest first."""
    if not out.is_dir():
        return []
    found = []
    for root, dirs, names in os.walk(out):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = Path(root) / name
            try:
                st = path.stat()
            except OSError:
                continue
            found.append({"path": path.relative_to(out).as_posix(), "size": st.st_size, "mtime": st.st_mtime})
            if len(found) >= FILES_SHOWN:
                break
    return sorted(found, key=lambda f: f["mtime"], reverse=True)


def chosen_checkpoint(store: JobStore, job_id: str) -> dict | None:
    try:
        data = json.loads((store.job_dir(job_id) / CHOSEN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
