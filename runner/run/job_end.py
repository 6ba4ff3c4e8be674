"""What a user reads about a job that has ended, from what it left on disk (the state file and the report the
pipeline wrote into the output folder): the last checkpoint home when there is no final LoRA, how far it got,
and whose time was spent (a CPU's or a GPU's, billed or not)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_report(output_dir: str | Path, job_id: str | None = None) -> dict[str, Any]:
    """The job's report.json, or {} (none yet, unreadable, or only another job's report in a shared folder):
    `report.json`, or `<output name>.report.json` when another LoRA's report had that name (report_files.py)."""
    from lorarun.runner.run.report_files import find_report

    return find_report(output_dir, job_id)[1]


def machine_time_label(state) -> str:
    """Whose time the instance's life was: "GPU time billed" on a rented GPU; on this machine nothing is billed,
    and a machine without a GPU spends CPU time."""
    gpu = (getattr(state, "gpu", None) or "").lower()
    cpu = gpu.startswith("cpu") or not gpu and getattr(state, "provider", "") == "local"
    kind = "CPU time" if cpu else "GPU time"
    if getattr(state, "provider", "") in ("local", "ssh"):
        where = "this machine" if state.provider == "local" else "your machine"
        return f"on {where} ({kind}, not billed by a provider)"
    return f"on the instance ({kind} billed)"


def progress_line(state) -> str | None:
    """How far training got, and why it ended early (from the report)."""
    report = read_report(state.output_dir, state.job_id)
    training = report.get("training") or {}
    steps, total = training.get("steps"), training.get("total_steps")
    if steps is None:
        return None
    why = report.get("stop_reason")
    return f"steps   {steps} of {total or '?'}" + (f" ({why})" if report.get("outcome") == "stopped" and why else "")


def last_checkpoint(output_dir: str | Path, lora_name: str) -> Path | None:
    """The newest epoch checkpoint home (`name-000002.safetensors`), for a job without its final LoRA."""
    found = sorted(Path(output_dir).glob(f"{lora_name}-*.safetensors"))
    return found[-1] if found else None
