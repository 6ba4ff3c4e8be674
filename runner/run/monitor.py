"""Follow a running job: tail the engine's events, pull every output as soon as the manifest lists it, and keep
the agent's grace window open with a heartbeat. One `poll()` does one round; the pipeline decides the pace."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lorarun.image.hold_points import hold
from lorarun.runner.remote.layout import RemoteLayout

# LOCAL_ERRNOS: "this laptop could not write it", kept importable from here for older callers
from lorarun.runner.run.local_writes import LOCAL_ERRNOS as LOCAL_ERRNOS
from lorarun.runner.run.local_writes import is_local_write_error
from lorarun.sshlink.transport import Transport

TERMINAL_EVENTS = ("finished", "failed", "stopped")
RESUMED_EVENT = "rental_resumed"  # written by the controller (runner/run/resume_state.py), never by the engine
# A dead agent (OOM killer, crashed container) writes nothing more and leaves no process. The controller calls it
# dead once its process has been missing this long (the first seconds after the start have no pid file yet), or
# once status.json — rewritten every 10 s by a live agent — has not changed this long. Read at call time, so
# tests can shorten them.
AGENT_DEAD_AFTER = 20.0
STATUS_STALE_AFTER = 120.0
AGENT_DONE_PHASES = ("finished", "failed", "stopped", "lease_expired", "grace", "self_destroying")


@dataclass
class MonitorProgress:
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    loss: float | None = None
    it_s: float | None = None
    outcome: str | None = None  # finished | failed | stopped, from the engine's last event
    reason: str = ""
    pulled: dict[str, str] = field(default_factory=dict)  # relative path → sha256 of what is on this laptop
    refused: list[str] = field(default_factory=list)  # manifest paths that would land outside the output folder
    local_errors: dict[str, str] = field(default_factory=dict)  # relative path → why it could not be written here
    marks: int = 0  # signs of progress: new engine events, or the job's processes using CPU (lease renewal)
    step_times: list[tuple[float, int]] = field(default_factory=list)  # (event time, step) for calibration
    # The engine's long phases other than steps, in the order they began: phase → (done, total or None, unit).
    # model_download (bytes), caching_latents, sampling, sampling_grid (images); see image/engine/events.py.
    phases: dict[str, tuple[int, int | None, str]] = field(default_factory=dict)


class JobMonitor:
    def __init__(
        self, transport: Transport, layout: RemoteLayout, local_output: Path, local_events: Path, now=time.monotonic
    ):
        self.transport = transport
        self.now = now
        self._agent_missing_since: float | None = None
        self._status_seen: tuple[object, float] | None = None  # (status.json "updated", when we first saw it)
        self._cpu_ticks = 0
        self.layout = layout
        self.local_output = local_output
        self.local_events = local_events
        self.progress = MonitorProgress()
        self._offset = local_events.stat().st_size if local_events.exists() else 0
        self._partial = b""
        self.events: list[dict] = read_jsonl(local_events)
        for event in self.events:
            self._apply(event)

    def poll(self) -> list[dict]:
        """Read new events, pull new outputs, beat the heart. Returns the new events."""
        new_events = self.read_new_events()
        self.pull_outputs()
        self.heartbeat()
        if any(e.get("event") == "step" for e in new_events):
            hold("training")  # tests only (image/hold_points.py): the local events.jsonl has a step
        return new_events

    def read_new_events(self) -> list[dict]:
        data = self.transport.read_bytes(self.layout.events, self._offset)
        if not data:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the next round
        events = []
        self.local_events.parent.mkdir(parents=True, exist_ok=True)
        with self.local_events.open("ab") as log:
            for line in lines:
                if not line.strip():
                    continue
                log.write(line + b"\n")
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line the engine did not finish writing before a crash; keep going
                events.append(event)
                self._apply(event)
                self.progress.marks += 1
        self.events.extend(events)
        return events

    def _apply(self, event: dict) -> None:
        kind = event.get("event")
        p = self.progress
        if kind == "step":
            p.step = int(event.get("step", p.step))
            p.total_steps = int(event.get("total_steps", p.total_steps))
            p.epoch = int(event.get("epoch", p.epoch))
            p.loss = event.get("loss", p.loss)
            p.it_s = event.get("it_s", p.it_s)
            p.step_times.append((float(event.get("t", time.time())), p.step))
        elif kind == "started":
            p.total_steps = int(event.get("total_steps", p.total_steps) or 0)
        elif kind == "progress" and event.get("phase"):
            total = event.get("total")
            p.phases[str(event["phase"])] = (
                int(event.get("done") or 0),
                int(total) if total is not None else None,
                str(event.get("unit") or "items"),
            )
        elif kind == RESUMED_EVENT:  # the job goes on on a new rental: an earlier rental's end is not this one's
            p.outcome, p.reason = None, ""
        elif kind in TERMINAL_EVENTS:
            p.outcome = kind
            p.reason = str(event.get("reason", "") or event.get("message", ""))

    def manifest(self) -> list[dict]:
        raw = self.transport.read_bytes(self.layout.manifest)
        if not raw:
            return []
        try:
            return list(json.loads(raw).get("files", []))
        except (json.JSONDecodeError, AttributeError):
            return []  # caught mid-rewrite on a filesystem without atomic rename; the next round reads it

    def pull_outputs(self, progress=None) -> list[str]:
        """Bring home every manifest file not yet here with the same sha256. Returns what was pulled.
        `progress(done, total, name)` before and after each file (the final pull shows "pulling files k/n")."""
        pulled = []
        entries = self.manifest()
        todo = [e for e in entries if self.progress.pulled.get(str(e.get("path", ""))) != str(e.get("sha256", ""))]
        if progress and todo:
            progress(0, len(todo), "")
        for entry in entries:
            rel, sha = str(entry.get("path", "")), str(entry.get("sha256", ""))
            if self.progress.pulled.get(rel) == sha:
                continue
            local = local_output_path(self.local_output, rel)
            if local is None:
                # The manifest comes from the instance, which is not trusted with the laptop's disk: a path that
                # resolves outside the output folder is refused, never opened (#15.4).
                if rel not in self.progress.refused:
                    self.progress.refused.append(rel)
                continue
            try:
                self.transport.get_file(self.layout.path("output", rel), local)
            except OSError as exc:
                # This machine's problem (disk full, no permission, read-only): the instance still has the file.
                # Noted and retried next round; `outputs_home` decides what happens if it never works.
                if not is_local_write_error(exc):
                    raise
                self.progress.local_errors[rel] = f"{exc.strerror or exc} writing {local}"
                continue
            self.progress.local_errors.pop(rel, None)
            self.progress.pulled[rel] = sha
            pulled.append(rel)
            if progress:
                progress(len(pulled), len(todo), rel)
        return pulled

    def manifest_dict(self) -> dict:
        return {"files": self.manifest()}

    def agent_status(self) -> dict | None:
        raw = self.transport.read_bytes(self.layout.status)
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return None

    def heartbeat(self) -> None:
        """Touch the heartbeat and, in the same round trip, ask whether the agent's process still exists.

        The agent reads the file's mtime; any write refreshes it. Never extends the lease, only the grace window."""
        pid_file = _q(self.layout.agent_pid)
        # The agent leads its process group (engine and workers included): the CPU time of that group is the
        # job's sign of life while it writes no events (import, model load, download). Fields 5, 14 and 15 of
        # /proc/<pid>/stat are pgrp, utime and stime (a comm with spaces would shift them: ours is "python").
        result = self.transport.run(
            f'touch {_q(self.layout.heartbeat)}; pid=$(cat {pid_file} 2>/dev/null) && kill -0 "$pid" 2>/dev/null;'
            f" rc=$?; if [ $rc -eq 0 ]; then cat /proc/[0-9]*/stat 2>/dev/null |"
            f" awk -v g=\"$pid\" '$5 == g {{s += $14 + $15}} END {{print s + 0}}'; fi; exit $rc",
            timeout=30,
            check=False,
        )
        if result.exit_code == 0:
            self._agent_missing_since = None
            try:
                ticks = int(result.stdout.strip() or 0)
            except ValueError:
                ticks = 0
            if ticks > self._cpu_ticks:
                self._cpu_ticks = ticks
                self.progress.marks += 1
        elif self._agent_missing_since is None:
            self._agent_missing_since = self.now()

    def agent_dead(self) -> str | None:
        """Why the agent counts as dead (its process gone, or status.json frozen), or None while it lives.
        Decided from the last heartbeat round and the status file; bounded by AGENT_DEAD_AFTER/STATUS_STALE_AFTER."""
        now = self.now()
        if self._agent_missing_since is not None and now - self._agent_missing_since >= AGENT_DEAD_AFTER:
            return f"no agent process for {now - self._agent_missing_since:.0f} s"
        status = self.agent_status() or {}
        updated = status.get("updated")
        if self._status_seen is None or self._status_seen[0] != updated:
            self._status_seen = (updated, now)
        elif updated is not None and now - self._status_seen[1] >= STATUS_STALE_AFTER:
            return f"status.json not updated for {now - self._status_seen[1]:.0f} s"
        return None

    def engine_done(self) -> bool:
        if self.progress.outcome:
            return True
        status = self.agent_status()
        return bool(status and status.get("phase") in AGENT_DONE_PHASES)

    def settle(self) -> str | None:
        """After the engine ended: read the last events, then the outcome — from the engine's own last event,
        else from the agent's status (an engine killed hard writes no event; the agent saw its exit code)."""
        self.read_new_events()
        if self.progress.outcome:
            return self.progress.outcome
        status = self.agent_status() or {}
        phase = status.get("outcome") or status.get("phase")
        if phase in ("finished", "stopped"):
            return phase
        if phase in AGENT_DONE_PHASES:
            code = status.get("engine_exit_code")
            self.progress.reason = status.get("message") or (
                f"the engine exited with code {code}"
                if code is not None
                else "the engine stopped without a final event"
            )
            return "failed"
        return None

    def seconds_per_step(self) -> float | None:
        """Training pace from the step events (one every ~2 s, plus the first and the last): the slope over the
        later half skips compile and warm-up; a short run with few events uses everything after the first."""
        times = self.progress.step_times
        if len(times) < 2:
            return None
        window = times[len(times) // 2 :] if len(times) >= 6 else (times[1:] if len(times) >= 3 else times)
        (t0, s0), (t1, s1) = window[0], window[-1]
        return (t1 - t0) / (s1 - s0) if s1 > s0 and t1 > t0 else None


def local_output_path(root: Path, rel: str) -> Path | None:
    """Where a manifest path lands under `root`, or None when it would land anywhere else.

    Refused: empty, absolute, backslashes, NUL, any `..` or empty part, and anything that — following symlinks
    already on the laptop — resolves outside `root` or to `root` itself. `x/../../escaped.txt` passes a prefix
    check but not this one."""
    if not rel or "\0" in rel or "\\" in rel:
        return None
    parts = rel.split("/")
    if PurePosixPath(rel).is_absolute() or any(part in ("", ".", "..") for part in parts):
        return None
    base = root.resolve()
    target = root.joinpath(*parts)
    resolved = target.resolve()
    if resolved == base or not resolved.is_relative_to(base):
        return None
    return target


def read_jsonl(path: Path) -> list[dict]:
    """Every complete JSON line of a local events file (a torn last line is skipped)."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def _q(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"
