"""The agent's job folder on the instance: files a reader over SFTP never sees half-written, and the events
file the agent shares with the engine (one `os.write` per line on an O_APPEND descriptor, so lines never tear)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lorarun.image.agent_files import FAILED, FINISHED, STOPPED


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary name and rename, so a reader (the controller over SFTP) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, sort_keys=True) + "\n")


def append_event(events_path: Path, event: str, now: float, **fields: Any) -> None:
    """One JSON line, one `os.write` on an O_APPEND descriptor: the engine appends to the same file."""
    line = json.dumps({"t": round(now, 3), "event": event, **fields}, sort_keys=True) + "\n"
    events_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def last_engine_outcome(events_path: Path, tail_bytes: int = 65536) -> str | None:
    """The engine's last finished/failed/stopped event in the end of events.jsonl, if any."""
    try:
        with open(events_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            event = json.loads(line).get("event")
        except (ValueError, AttributeError):
            continue  # the first line of the tail may be cut in half
        if event in (FINISHED, FAILED, STOPPED):
            return event
    return None
