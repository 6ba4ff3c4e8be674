"""Loading the calibration: the shipped table beside this file plus every measurement recorded under the lorarun
home (`calibration.jsonl`, one line per finished job; calibration_record.py appends them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorarun.provider_adapters.user_files import lorarun_home
from lorarun.runner.price.calibration import (
    Calibration,
    Factors,
    FamilyCosts,
    Measurement,
    ProviderCosts,
    Sampling,
    StepOptions,
    StepRow,
    Transfer,
    reso,
)

TABLE_PATH = Path(__file__).with_name("calibration_table.json")
MEASURED_FILE = "calibration.jsonl"


def load_calibration(home: Path | None = None, table: Path = TABLE_PATH) -> Calibration:
    """The shipped table plus every measurement recorded under the lorarun home."""
    data = json.loads(table.read_text(encoding="utf-8"))
    return parse_table(data).with_measurements(tuple(read_measurements(home)))


def parse_table(data: dict[str, Any]) -> Calibration:
    f, t, s = data["factors"], data["transfer"], data["sampling"]
    return Calibration(
        gpus=tuple((k, float(v["bf16_tflops"]), v["source"]) for k, v in data["gpus"].items()),
        families=tuple(
            (
                k,
                FamilyCosts(
                    train_tflop_per_sample=float(v["train_tflop_per_sample"]),
                    reference_resolution=reso(v["reference_resolution"]),
                    checkpointing_flops=float(v["checkpointing_flops"]),
                    load_s=float(v["load_s"]),
                    cache_s_per_image=float(v["cache_s_per_image"]),
                    model_gb=float(v["model_gb"]),
                    source=v["source"],
                ),
            )
            for k, v in data["families"].items()
        ),
        providers=tuple(
            (k, ProviderCosts(float(v["boot_s"]), bool(v["pulls_image"]), v["source"]))
            for k, v in data["providers"].items()
        ),
        factors=Factors(
            efficiency=float(data["efficiency"]["value"]),
            checkpointing_overhead=f["checkpointing_overhead"],
            text_encoder_overhead=f["text_encoder_overhead"],
            fp32_compute=f["fp32_compute"],
            multi_gpu_step=f["multi_gpu_step"],
            resolution_exponent=f["resolution_exponent"],
            min_overhead_share=f["min_overhead_share"],
        ),
        transfer=Transfer(
            image_gb=t["image_gb"],
            laptop_up_mbps=t["laptop_up_mbps"],
            laptop_down_mbps=t["laptop_down_mbps"],
            network_efficiency=t["network_efficiency"],
            image_extract_s_per_gb=t["image_extract_s_per_gb"],
            slow_network_mbps=t["slow_network_mbps"],
        ),
        sampling=Sampling(denoise_step_share=s["denoise_step_share"], per_image_s=s["per_image_s"]),
        shipped=tuple(_row(r) for r in data["steps"]),
    )


def measurements_path(home: Path | None = None) -> Path:
    return (home or lorarun_home()) / MEASURED_FILE


def read_measurements(home: Path | None = None) -> list[Measurement]:
    path = measurements_path(home)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(Measurement.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash must not stop every later estimate
    return out


def _row(r: dict[str, Any]) -> StepRow:
    return StepRow(
        gpu=r["gpu"],
        family=r["family"],
        resolution=reso(r["resolution"]),
        batch=int(r["batch"]),
        options=StepOptions(
            gradient_checkpointing=bool(r.get("gradient_checkpointing", False)),
            trains_text_encoder=bool(r.get("trains_text_encoder", False)),
            mixed_precision=str(r.get("mixed_precision", "bf16")),
        ),
        seconds_per_step=float(r["seconds_per_step"]),
        source=r["source"],
    )
