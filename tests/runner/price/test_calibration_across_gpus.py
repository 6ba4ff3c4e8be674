"""A job measured on one GPU teaches the next estimate on the other GPUs too (issue 19).

Before: the measured GPU got the measurement, every other GPU kept the shipped guess (scaled from the shipped row
of its own GPU, even one with other options). Where the table was optimistic, measuring a GPU made it look slower
than the unmeasured ones: the next plan moved to them and sized its jobs by the old guess (bench/batch_wall.py's
batch packed a short job behind the long one because it believed the long one took 20 s; it took 8 minutes)."""

import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from lorarun.image.buckets import BucketSpec
from lorarun.image.dataset_scan import scan_dataset
from lorarun.image.engine_config import DatasetConfig, ModelConfig, SampleConfig, TrainingConfig
from lorarun.provider_adapters.base import Offer
from lorarun.runner.job.spec import JobSpec
from lorarun.runner.price.calibration import Measured
from lorarun.runner.price.calibration_load import load_calibration
from lorarun.runner.price.calibration_record import record_measurement
from lorarun.runner.price.estimate import estimate_offer, rank
from lorarun.runner.price.job_inputs import inputs_from_job


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("LORARUN_HOME", str(home))
    return home


def job(tmp_path: Path, base: str, resolution: int, epochs: int, mixed_precision: str = "bf16"):
    """A real scanned folder of 2 images (2 repeats) and a spec around it."""
    folder = tmp_path / f"job-{resolution}" / "dataset" / "2_thing"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (96, 96), (i * 40, 80, 160)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("a thing", encoding="utf-8")
    spec = JobSpec(
        name="j",
        source=str(tmp_path / f"job-{resolution}" / "job.yaml"),
        model=ModelConfig(family="sd15", base=base),
        dataset=DatasetConfig(resolution=(resolution, resolution), min_bucket_reso=32, bucket_reso_steps=16),
        training=TrainingConfig(max_train_epochs=epochs, batch_size=2, network_dim=4, mixed_precision=mixed_precision),
        sample=SampleConfig(prompts=()),
    )
    scan = scan_dataset(spec.dataset_dir, BucketSpec(resolution=(resolution, resolution)))
    assert not scan.errors
    return spec, scan


def offer(gpu_name: str, price: float, oid: str) -> Offer:
    return Offer(
        provider="vastai",
        id=oid,
        gpu_name=gpu_name,
        gpu_count=1,
        vram_gb=24.0,
        price_per_hour=price,
        reliability=0.99,
        inet_down_mbps=800.0,
        inet_up_mbps=400.0,
        cuda_version=12.8,
    )


def measure(home, inputs, on: Offer, seconds_per_step: float, job_id: str) -> None:
    cal = load_calibration(home)
    predicted = estimate_offer(inputs, on, cal)
    steps = inputs.steps
    measured = Measured(train_s=steps * seconds_per_step, steps_done=steps, boot_s=5.0)
    record_measurement(predicted, inputs, measured, job_id=job_id, home=home, clock=lambda: 1_700_000_000.0)


def test_a_step_measured_on_a_3090_sizes_the_next_estimate_on_a_4090(tmp_path, home):
    """The bench's case: the built-in tiny model, fp32, 64 px, batch 2; the simulated GPU takes 60 s a step. The
    4090's shipped row (bf16, "launch overhead only") is not this setting; the 3090's measurement is."""
    spec, scan = job(tmp_path, "builtin:tiny-sd15", 64, epochs=4, mixed_precision="no")
    cal = load_calibration(home)
    inputs = inputs_from_job(spec, scan, cal)
    assert inputs.family == "tiny" and inputs.steps == 8
    rtx3090, rtx4090 = offer("RTX 3090", 0.18, "1003"), offer("RTX 4090", 0.25, "1006")
    guessed = estimate_offer(inputs, rtx4090, cal)
    assert guessed.seconds_per_step < 1.0  # the shipped guess: launch overhead only

    measure(home, inputs, rtx3090, 60.0, "long-on-3090")
    learned = load_calibration(home)
    on_3090 = estimate_offer(inputs, rtx3090, learned)
    assert on_3090.step_kind == "measured" and on_3090.seconds_per_step == pytest.approx(60.0)
    on_4090 = estimate_offer(inputs, rtx4090, learned)
    assert on_4090.step_kind == "scaled"  # not a measurement of the 4090, and it says where it came from
    assert "measured: job long-on-3090" in on_4090.step_source
    assert on_4090.seconds_per_step == pytest.approx(60.0, rel=0.01)  # the tiny model's step is all overhead
    # The next plan no longer moves to the unmeasured GPU because it only looks faster: the cheaper 3090 wins.
    assert [e.offer.id for e in rank(inputs, [rtx4090, rtx3090], learned)][0] == "1003"
    # A shorter job of the same setting, on either GPU: its steps at the measured pace.
    short_spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, max_train_epochs=1))
    short = inputs_from_job(short_spec, scan, learned)
    assert estimate_offer(short, rtx4090, learned).phases.train == pytest.approx(short.steps * 60.0, rel=0.01)


def test_a_real_model_measured_on_a_3090_corrects_the_4090_estimate(tmp_path, home):
    """SD1.5 at 512, batch 2: a user's 3090 ran at 0.9 s/step, well above the table's guess. The 4090 estimate keeps
    the 4090's own arithmetic (faster than the 3090's) on top of the overhead the user's job really had."""
    spec, scan = job(tmp_path, "runwayml/stable-diffusion-v1-5", 512, epochs=10)
    cal = load_calibration(home)
    inputs = inputs_from_job(spec, scan, cal)
    rtx3090, rtx4090 = offer("RTX 3090", 0.18, "1003"), offer("RTX 4090", 0.25, "1006")
    before = estimate_offer(inputs, rtx4090, cal).seconds_per_step
    table_3090 = estimate_offer(inputs, rtx3090, cal).seconds_per_step
    assert table_3090 < 0.9  # the measurement says the table was optimistic for this user's jobs

    measure(home, inputs, rtx3090, 0.9, "sd15-on-3090")
    learned = load_calibration(home)
    after = estimate_offer(inputs, rtx4090, learned)
    assert "measured: job sd15-on-3090" in after.step_source
    assert before < after.seconds_per_step < 0.9  # slower than the guess, still faster than the 3090
    assert estimate_offer(inputs, rtx3090, learned).seconds_per_step == pytest.approx(0.9)


def test_a_same_gpu_measurement_still_comes_first(tmp_path, home):
    """A measurement of the very GPU and setting is used as it is, whatever other GPUs measured."""
    spec, scan = job(tmp_path, "builtin:tiny-sd15", 64, epochs=4, mixed_precision="no")
    inputs = inputs_from_job(spec, scan, load_calibration(home))
    rtx3090, rtx4090 = offer("RTX 3090", 0.18, "1003"), offer("RTX 4090", 0.25, "1006")
    measure(home, inputs, rtx3090, 60.0, "on-3090")
    measure(home, inputs, rtx4090, 20.0, "on-4090")
    learned = load_calibration(home)
    on_4090 = estimate_offer(inputs, rtx4090, learned)
    assert on_4090.step_kind == "measured" and on_4090.seconds_per_step == pytest.approx(20.0)
    assert estimate_offer(inputs, rtx3090, learned).seconds_per_step == pytest.approx(60.0)
