"""The page's buttons, carried out by the CLI itself: each action starts `lorarun down|pull JOB` as its own process,
so it takes the job's controller lock exactly as a terminal would (runner/state.py: one controller per job; `down`
next to a live controller asks it to stop and follows it) and goes through the same controller code.

Each process runs in its own session with its output in the job's folder (`ui-actions.log`): closing the UI, or
Ctrl-C in its terminal, never cuts a stop half-way, so the UI cannot leave an instance billing that the CLI would
not. The server never writes `state.json` or holds a lock itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lorarun.runner.run.monitor import local_output_path
from lorarun.runner.state import JobStore
from lorarun.runner.ui.views import CHOSEN_FILE, EventCache, checkpoints

ACTION_LOG = "ui-actions.log"
LOG_TAIL_BYTES = 4000


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    message: str


@dataclass
class ActionRun:
    action: str
    job_id: str
    process: subprocess.Popen
    started: float

    def as_dict(self) -> dict:
        code = self.process.poll()  # also reaps the child: no zombies while the UI stays open
        return {
            "action": self.action,
            "pid": self.process.pid,
            "started": self.started,
            "running": code is None,
            "exit_code": code,
        }


def cli_command(*args: str) -> list[str]:
    """`lorarun ARGS` with this interpreter (the one the UI runs under, so the same install and LORARUN_HOME)."""
    return [sys.executable, "-m", "lorarun.runner.cli.app", *args]


class Actions:
    def __init__(self, store: JobStore, cache: EventCache | None = None):
        self.store = store
        self.cache = cache or EventCache()
        self._runs: list[ActionRun] = []
        self._lock = threading.Lock()

    # -- the buttons ----------------------------------------------------------------------------------------------
    def stop(self, job_id: str) -> ActionResult:
        """As `lorarun down JOB`: the engine saves a checkpoint, outputs come home, the instance is destroyed."""
        state = self.store.load(job_id)
        if state.is_final and (state.instance_destroyed or not state.instance_id):
            return ActionResult(False, f"job {state.job_id} is {state.phase}; its instance is gone already")
        return self._start("down", state.job_id)

    def keep_checkpoint(self, job_id: str, rel: str) -> ActionResult:
        """Stop now and keep the checkpoint the user judged best (its samples looked right): checked against the
        sha256 the engine announced, copied to `<name>-chosen.safetensors` beside it, recorded in the job's folder
        and shown on the page; then the same stop as `lorarun down`."""
        state = self.store.load(job_id)
        known = {
            c["path"]: c
            for c in checkpoints(
                self.cache.events(self.store.job_dir(state.job_id) / "events.jsonl"), Path(state.output_dir)
            )
            if c.get("path")
        }
        chosen = known.get(rel)
        local = local_output_path(Path(state.output_dir), rel) if chosen else None
        if chosen is None or local is None or not local.is_file():
            return ActionResult(False, f"{rel!r} is not a checkpoint of job {state.job_id} that is home yet")
        digest = _sha256(local)
        announced = _announced_sha256(self.cache.events(self.store.job_dir(state.job_id) / "events.jsonl"), rel)
        if announced and digest != announced:
            return ActionResult(
                False, f"{rel} here differs from the instance's (sha256); `lorarun pull` fetches it again"
            )
        # A copy under a name that says what it is, beside the others: the file to load, whatever the stop saves
        # after it as <name>.safetensors. Copied (not linked) so a later pull of the epoch file cannot change it.
        kept = local.with_name(chosen_name(local.name))
        tmp = kept.with_name(kept.name + ".tmp")
        shutil.copyfile(local, tmp)
        os.replace(tmp, kept)
        record = {
            "path": rel,
            "step": chosen.get("step"),
            "epoch": chosen.get("epoch"),
            "sha256": digest,
            "copied_to": str(kept),
            "at": time.time(),
        }
        target = self.store.job_dir(state.job_id) / CHOSEN_FILE
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        if state.is_final and (state.instance_destroyed or not state.instance_id):
            return ActionResult(True, f"kept {rel} as {kept.name} (the job had ended already)")
        started = self._start("down", state.job_id)
        return ActionResult(started.ok, f"kept {rel} as {kept.name}; " + started.message)

    def pull(self, job_id: str) -> ActionResult:
        """As `lorarun pull JOB`: what the instance has that is not home yet, without attaching to the job."""
        state = self.store.load(job_id)
        if not state.instance_id or state.instance_destroyed:
            return ActionResult(False, f"job {state.job_id} has no instance to pull from; its outputs are home")
        return self._start("pull", state.job_id)

    # -- bookkeeping ----------------------------------------------------------------------------------------------
    def runs(self, job_id: str) -> list[dict]:
        with self._lock:
            return [r.as_dict() for r in self._runs if r.job_id == job_id]

    def log_tail(self, job_id: str) -> str:
        path = self.store.job_dir(job_id) / ACTION_LOG
        try:
            with path.open("rb") as fh:
                fh.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _start(self, action: str, job_id: str) -> ActionResult:
        with self._lock:
            running = next((r for r in self._runs if r.job_id == job_id and r.process.poll() is None), None)
            if running is not None:
                return ActionResult(False, f"`lorarun {running.action}` (pid {running.process.pid}) is still at work")
            log_path = self.store.job_dir(job_id) / ACTION_LOG
            with log_path.open("ab") as log:
                log.write(f"--- {time.strftime('%H:%M:%S')} lorarun {action} {job_id} (from lorarun ui)\n".encode())
                log.flush()
                env = dict(os.environ, LORARUN_HOME=str(self.store.home), COLUMNS="120", NO_COLOR="1")
                process = subprocess.Popen(
                    cli_command(action, job_id),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # a Ctrl-C to the UI must not reach the stop it started
                )
            self._runs.append(ActionRun(action, job_id, process, time.time()))
        return ActionResult(True, f"`lorarun {action} {job_id}` started (pid {process.pid})")

    def wait_all(self, timeout: float) -> None:
        """For tests and a clean exit: wait for the actions started here (they carry on if we do not)."""
        deadline = time.monotonic() + timeout
        for run in list(self._runs):
            try:
                run.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return


def chosen_name(checkpoint: str) -> str:
    """`mychar-000004.safetensors` (kohya's epoch name) or `mychar-step00000120.safetensors` → `mychar-chosen.safetensors`."""
    stem, dot, suffix = checkpoint.rpartition(".")
    base = re.sub(r"-(?:step)?\d+$", "", stem) if dot else checkpoint
    return f"{base}-chosen.{suffix}" if dot else f"{checkpoint}-chosen"


def _announced_sha256(events: list[dict], rel: str) -> str | None:
    for event in reversed(events):
        if event.get("event") == "checkpoint" and event.get("path") == rel and isinstance(event.get("sha256"), str):
            return event["sha256"]
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
