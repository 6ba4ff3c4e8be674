"""Recording what a finished job measured, beside what was predicted for it, so the next estimate learns from it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lorarun.runner.price.calibration import Measured, Measurement
from lorarun.runner.price.calibration_load import load_calibration, measurements_path
from lorarun.runner.price.estimate import Estimate, EstimateInputs, estimate_offer
from lorarun.runner.price.gpu_keys import gpu_key
from lorarun.runner.price.job_inputs import inputs_from_job


def record_measurement(
    estimate: Estimate,
    inputs: EstimateInputs,
    measured: Measured,
    *,
    job_id: str,
    gpu_name: str | None = None,
    home: Path | None = None,
    clock=time.time,
) -> Measurement:
    """Append what one finished job measured, beside what was predicted for it, to calibration.jsonl.

    `estimate` and `inputs` are the ones the job was launched with; `gpu_name` is the instance's real GPU when
    the provider reports one (default: the offer's).
    """
    offer = estimate.offer
    name = gpu_name or offer.gpu_name
    record = Measurement(
        recorded_at=clock(),
        job_id=job_id,
        provider=offer.provider,
        gpu_name=name,
        gpu=gpu_key(name),
        gpu_count=max(1, min(offer.gpu_count or 1, inputs.gpu_count)),
        family=inputs.family,
        resolution=inputs.resolution,
        batch=inputs.batch_size,
        options=inputs.options,
        steps=inputs.steps,
        measured=measured,
        predicted_phases=estimate.phases.items(),
        predicted_seconds_per_step=estimate.seconds_per_step,
        predicted_total_s=estimate.total_seconds,
        predicted_cost=estimate.total_cost,
    )
    path = measurements_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:  # one line per job; appends from two jobs do not interleave
        fh.write(record.to_json() + "\n")
    return record


def record_job(
    *, run: Any, offer: Any, provider: str = "", home: Path | None = None, clock=time.time
) -> Measurement | None:
    """`record_measurement` from the pipeline's own bookkeeping: `run.job` (ValidatedJob), `run.timings`
    (boot, upload, upload_bytes, training, seconds_per_step, download — seconds) and the rented `offer`.

    The prediction stored beside the measurement is recomputed from the calibration as it stood before this
    record, i.e. the numbers `estimate` showed for this offer. Returns None when there is nothing to record.
    """
    t: dict[str, float] = dict(run.timings)
    if not t:
        return None
    cal = load_calibration(home)
    inputs = inputs_from_job(run.job.spec, run.job.scan, cal)
    predicted = estimate_offer(inputs, offer, cal)
    sps = t.get("seconds_per_step")
    measured_phases = [t[k] for k in ("boot", "upload", "training", "download") if k in t]
    measured = Measured(
        boot_s=t.get("boot"),
        upload_s=t.get("upload"),
        upload_bytes=int(t["upload_bytes"]) if "upload_bytes" in t else None,
        # The monitor measures seconds per step directly (slope of the second half); stored as steps × s/step.
        train_s=sps * inputs.steps if sps else None,
        steps_done=inputs.steps if sps else None,
        training_wall_s=t.get("training"),
        download_s=t.get("download"),
        total_s=sum(measured_phases) if len(measured_phases) == 4 else None,
        cost=(sum(measured_phases) * offer.price_per_hour / 3600) if len(measured_phases) == 4 else None,
        install_s=t.get("install"),
        # The image's start-up milestones (runner/price/startup_timing.py): how much of `boot` is our image's own.
        startup_s=t.get("startup_engine_importable", t.get("startup_sshd_up")),
    )
    return record_measurement(predicted, inputs, measured, job_id=str(run.state.job_id), home=home, clock=clock)
