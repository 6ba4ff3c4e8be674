"""Start-up timing read from the instance: the image's start-up writes one JSON line per milestone to
/var/log/lorarun/startup.jsonl (image/instance/startup/lorarun-startup.sh): container started, sshd up, engine importable.
The engine's own events carry model loaded and first step. The pipeline keeps the gaps in the job's timings
(seconds), next to boot/upload/training, where the estimate's calibration reads them."""

from __future__ import annotations

import json

STARTUP_EVENTS = "/var/log/lorarun/startup.jsonl"


def parse(text: str) -> dict[str, float]:
    """{event: unix time} from the file's lines; unreadable lines are skipped (a half-written last line)."""
    seen: dict[str, float] = {}
    for line in text.splitlines():
        try:
            event = json.loads(line)
            seen.setdefault(str(event["event"]), float(event["time"]))
        except (ValueError, KeyError, TypeError):
            continue
    return seen


def timings(events: dict[str, float]) -> dict[str, float]:
    """Seconds from container start to each later milestone: `startup_sshd_up`, `startup_engine_importable`."""
    start = events.get("container_started")
    if start is None:
        return {}
    return {
        f"startup_{name}": round(t - start, 3)
        for name, t in events.items()
        if name != "container_started" and t >= start
    }


def read(transport) -> dict[str, float]:
    """The timings of this instance's start-up; {} where the image writes none (stock images, own hosts)."""
    try:
        raw = transport.read_bytes(STARTUP_EVENTS)
    except Exception:
        return {}
    return timings(parse(raw.decode(errors="replace"))) if raw else {}
