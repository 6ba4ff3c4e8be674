"""Which report files belong to which run (#24): two runs writing into one output folder never replace each
other's report.

`report.json`, `report.md` and `report.html` stay the names a user finds next to the LoRA. A run writes them when
the folder has none yet, or when the one there is its own (the same job) or about the same LoRA (`output.name`,
which lorarun only replaces when asked: `--overwrite`, runner/job/output_guard.py). Otherwise — another LoRA's
report is there, e.g. two jobs of a batch sharing `output.dir` — it writes `<output.name>.report.json|md|html`
beside it. Readers find a job's report by its job id in either place."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REPORT_STEMS = ("report.json", "report.md", "report.html")


def report_output_name(report: dict[str, Any]) -> str | None:
    """The LoRA a report is about: `output_name` (written since #24), else guessed from its files' names."""
    if isinstance(report.get("output_name"), str):
        return report["output_name"]
    for f in report.get("files") or ():
        name = Path(str(f.get("path") or "")).name if isinstance(f, dict) else ""
        if name.endswith(".safetensors"):
            return re.sub(r"-\d{6}$", "", name.removesuffix(".safetensors"))  # a checkpoint: name-000002
    return None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def report_paths(output_dir: Path, job_id: str | None, output_name: str | None) -> tuple[Path, Path, Path]:
    """Where this run's report goes: `report.*`, or `<output_name>.report.*` when `report.*` is another LoRA's."""
    output_dir = Path(output_dir)
    plain = tuple(output_dir / n for n in REPORT_STEMS)
    existing = _read(plain[0]) if plain[0].exists() else None
    if existing is None or not output_name:
        return plain  # type: ignore[return-value]
    if existing.get("job_id") == job_id or report_output_name(existing) in (output_name, None):
        return plain  # type: ignore[return-value]
    return tuple(output_dir / f"{output_name}.{n}" for n in REPORT_STEMS)  # type: ignore[return-value]


def find_report(output_dir: str | Path, job_id: str | None) -> tuple[Path | None, dict[str, Any]]:
    """This job's report.json (its path and content) in `output_dir`, or (None, {}): `report.json` when it is this
    job's (or says no job), else a `<name>.report.json` of this job."""
    output_dir = Path(output_dir)
    plain = _read(output_dir / "report.json")
    if plain is not None and (not job_id or plain.get("job_id") in (None, job_id)):
        return output_dir / "report.json", plain
    if job_id and output_dir.is_dir():
        for path in sorted(output_dir.glob("*.report.json")):
            data = _read(path)
            if data is not None and data.get("job_id") == job_id:
                return path, data
    return None, {}


def html_beside(report_json: Path) -> Path:
    """report.json → report.html; name.report.json → name.report.html."""
    return report_json.with_name(report_json.name.removesuffix(".json") + ".html")
