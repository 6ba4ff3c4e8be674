"""Where the engine's time went, read from its events' timestamps (`t`, wall seconds): loading the model (download
included), caching latents and captions, the training steps themselves, sampling (the epoch samples and the final
grid) and saving checkpoints. The engine marks each phase already (`started`, `caching`, `progress` for
caching_*/sampling*, whose first event is sent at 0 done and the last at done == total, `step`, and `checkpoint`
with its `save_seconds`), so nothing is timed twice."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PHASES = ("load", "caching", "training steps", "sampling", "saving")
_CACHING = ("caching_latents", "caching_text")
_SAMPLING = ("sampling", "sampling_grid")


def _t(e: Mapping[str, Any]) -> float | None:
    value = e.get("t")
    return float(value) if isinstance(value, (int, float)) else None


def _blocks(events: Sequence[Mapping[str, Any]], phases: tuple[str, ...]) -> list[tuple[float, float]]:
    """(start, end) of each run of progress events of `phases`, from its 0-done event to its done == total one."""
    blocks: list[tuple[float, float]] = []
    start: float | None = None
    for e in events:
        t = _t(e)
        if t is None or e.get("event") != "progress" or e.get("phase") not in phases:
            continue
        if start is None or e.get("done") == 0:
            start = t
        if e.get("total") is not None and e.get("done") == e.get("total"):
            blocks.append((start, t))
            start = None
    return blocks


def engine_phases(events: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per phase (only the phases that happened). Empty when the events carry no timestamps."""
    started = next((_t(e) for e in events if e.get("event") == "started" and _t(e) is not None), None)
    if started is None:
        return {}
    steps = [t for e in events if e.get("event") == "step" and (t := _t(e)) is not None]
    caching_marks = [
        t
        for e in events
        if (e.get("event") == "caching" or (e.get("event") == "progress" and e.get("phase") in _CACHING))
        and (t := _t(e)) is not None
    ]
    sampling = sum(end - start for start, end in _blocks(events, _SAMPLING))
    saving = sum(
        float(e["save_seconds"])
        for e in events
        if e.get("event") == "checkpoint" and isinstance(e.get("save_seconds"), (int, float))
    )
    out: dict[str, float] = {}
    first_work = min([*caching_marks, *steps[:1]], default=None)
    if first_work is not None:
        out["load"] = max(0.0, first_work - started)
    if caching_marks:
        out["caching"] = max(0.0, max(caching_marks) - min(caching_marks))
    if steps:
        train_start = max(caching_marks) if caching_marks else (first_work or started)
        in_loop = [
            (s, e) for s, e in _blocks(events, _SAMPLING) if train_start <= s <= steps[-1]
        ]  # epoch samples taken between steps
        saves_in_loop = sum(
            float(e["save_seconds"])
            for e in events
            if e.get("event") == "checkpoint"
            and isinstance(e.get("save_seconds"), (int, float))
            and (t := _t(e)) is not None
            and train_start <= t <= steps[-1]
        )
        out["training steps"] = max(0.0, steps[-1] - train_start - sum(e - s for s, e in in_loop) - saves_in_loop)
    if sampling:
        out["sampling"] = sampling
    if saving:
        out["saving"] = saving
    return out
