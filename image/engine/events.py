"""Events (`events.jsonl`) and the output manifest (`manifest.json`): the engine's only interface to the controller.

Each event is one JSON line written with a single `os.write` on an O_APPEND descriptor, so a reader tailing the
file never sees half a line from us and a crash loses at most the event being written. The manifest lists every
output file with its sha256; it is rewritten atomically (tmp + os.replace) after each output, so the controller can
pull whatever it lists the moment it appears. Torch-free. Only the main process writes (data-parallel runs pass
enabled=False elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from lorarun.image.hold_points import hold

EVENTS_FILE = "events.jsonl"
MANIFEST_FILE = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class EventLog:
    def __init__(self, output_dir: Path, enabled: bool = True, clock=time.time):
        self.output_dir = Path(output_dir)
        self.enabled = enabled
        self.clock = clock
        self._fd: int | None = None
        self._files: dict[str, dict] = {}
        if enabled:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.output_dir / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._load_manifest()

    def emit(self, event: str, **fields) -> dict:
        record = {"t": round(self.clock(), 3), "event": event, **fields}
        if self._fd is not None:
            os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8"))
        if event == "step":
            hold("engine:step", busy=True)  # tests only (image/hold_points.py)
        return record

    def output(self, event: str, path: Path, kind: str, **fields) -> dict:
        """Register a finished output file: manifest first (so a listed file is complete), then the event."""
        if not self.enabled:
            return {}
        rel = Path(path).resolve().relative_to(self.output_dir.resolve()).as_posix()
        entry = {"path": rel, "sha256": sha256_file(Path(path)), "size": Path(path).stat().st_size, "kind": kind}
        self._files[rel] = entry
        self._write_manifest()
        return self.emit(event, path=rel, sha256=entry["sha256"], size=entry["size"], **fields)

    def remove_output(self, event: str, path: Path, **fields) -> dict:
        """Delete an output this run wrote earlier (save_last_n_epochs): out of the manifest first, so the
        controller stops asking for it, then the file. Copies already pulled home are the controller's business."""
        if not self.enabled:
            return {}
        rel = Path(path).resolve().relative_to(self.output_dir.resolve()).as_posix()
        self._files.pop(rel, None)
        self._write_manifest()
        Path(path).unlink(missing_ok=True)
        return self.emit(event, path=rel, **fields)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _load_manifest(self) -> None:
        """A resumed run keeps the files the earlier attempt listed."""
        path = self.output_dir / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            for entry in data.get("files", []):
                if (self.output_dir / entry["path"]).is_file():
                    self._files[entry["path"]] = entry
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def _write_manifest(self) -> None:
        path = self.output_dir / MANIFEST_FILE
        tmp = path.with_name(f".{MANIFEST_FILE}.{os.getpid()}.tmp")
        body = {"files": list(self._files.values()), "updated": round(self.clock(), 3)}
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class PhaseProgress:
    """`progress` events for a long phase (model download bytes, caching N/M, sampling k/n), at most one a second
    plus the first and the last, so a 10 000-image cache adds a few hundred lines, not ten thousand.

    Event: {"event": "progress", "phase": <name>, "done": n, "total": m or null, "unit": "images"|"bytes"|…}.
    Phases: model_download, caching_latents, caching_text, sampling."""

    def __init__(
        self,
        events: EventLog,
        phase: str,
        total: int | None = None,
        unit: str = "items",
        min_interval: float = 1.0,
        clock=time.monotonic,
    ):
        self.events, self.phase, self.total, self.unit = events, phase, total, unit
        self.min_interval, self.clock = min_interval, clock
        self._last: float | None = None

    def __call__(self, done: int, total: int | None = None) -> None:
        total = self.total if total is None else total
        now = self.clock()
        final = total is not None and done >= total
        if self._last is not None and not final and now - self._last < self.min_interval:
            return
        self._last = now
        self.events.emit("progress", phase=self.phase, done=int(done), total=total, unit=self.unit)
