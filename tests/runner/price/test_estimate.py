"""The cost model: the guides' reference job, the exclusion rules, ranking, and measured calibration."""

import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from lorarun.image.buckets import BucketSpec
from lorarun.image.dataset_scan import scan_dataset
from lorarun.image.engine_config import ModelConfig, SampleConfig, TrainingConfig
from lorarun.provider_adapters.base import Offer
from lorarun.runner.job.spec import JobSpec, Resources
from lorarun.runner.price.calibration import Measured, StepOptions
from lorarun.runner.price.calibration_load import load_calibration, read_measurements
from lorarun.runner.price.calibration_record import record_measurement
from lorarun.runner.price.estimate import estimate_offer, rank
from lorarun.runner.price.gpu_keys import gpu_key
from lorarun.runner.price.job_inputs import inputs_from_job


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("LORARUN_HOME", str(home))
    return home


@pytest.fixture
def cal(home):
    return load_calibration(home)


def reference_job(tmp_path: Path, **training) -> tuple[JobSpec, object]:
    """The guides' job: 50 images × 10 repeats × 10 epochs, batch 2, SD1.5 at 512 (a real folder, scanned)."""
    folder = tmp_path / "job" / "dataset" / "10_subject"
    folder.mkdir(parents=True)
    for i in range(50):
        Image.new("RGB", (96, 96), (i * 5, 80, 160)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text("a photo of subject", encoding="utf-8")
    spec = JobSpec(
        name="reference",
        source=str(tmp_path / "job" / "job.yaml"),
        model=ModelConfig(family="sd15", base="runwayml/stable-diffusion-v1-5"),
        training=TrainingConfig(max_train_epochs=10, batch_size=2, network_dim=32, **training),
        sample=SampleConfig(prompts=("a photo of subject",), every_n_epochs=2),
    )
    scan = scan_dataset(spec.dataset_dir, BucketSpec(resolution=(512, 512)))
    assert not scan.errors
    return spec, scan


def offer(**kw) -> Offer:
    base = dict(
        provider="vastai",
        id="1",
        gpu_name="RTX 4090",
        gpu_count=1,
        vram_gb=24.0,
        price_per_hour=0.35,
        reliability=0.99,
        inet_down_mbps=800.0,
        inet_up_mbps=400.0,
        cuda_version=12.8,
    )
    return Offer(**{**base, **kw})


def test_reference_job_on_a_4090(tmp_path, cal):
    spec, scan = reference_job(tmp_path)
    inputs = inputs_from_job(spec, scan, cal)
    assert inputs.steps == 2500
    assert inputs.family == "sd15" and inputs.batch_size == 2 and inputs.options.trains_text_encoder
    assert inputs.model_download_gb == pytest.approx(2.1)  # SD1.5 fp16 from the hub
    assert inputs.dataset_bytes > 0
    e = estimate_offer(inputs, offer(), cal)
    assert e.fits, e.excluded
    # A 4090 runs this SD1.5 job in well under an hour: a few cents to under a dollar in all.
    assert 0.02 < e.total_cost < 1.0
    assert 5 * 60 < e.total_seconds < 60 * 60
    assert e.phases.train == pytest.approx(2500 * e.seconds_per_step)
    assert e.total_cost == pytest.approx(0.35 * e.total_seconds / 3600)
    assert all(seconds >= 0 for _, seconds in e.phases.items())
    assert e.phases.startup > 0 and e.phases.transfer > 0 and e.phases.training > e.phases.train
    assert e.step_kind == "scaled" and e.step_source.startswith("scaled from h100 sxm sd15@512x512")
    assert e.vram_needed_gb < 24


def test_shipped_row_is_used_as_is(tmp_path, cal):
    spec, scan = reference_job(tmp_path, text_encoder_lr=0)
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, batch_size=1))
    inputs = inputs_from_job(spec, scan, cal)
    e = estimate_offer(inputs, offer(gpu_name="H100 SXM", vram_gb=80, price_per_hour=2.0), cal)
    assert e.step_kind == "shipped"
    assert e.seconds_per_step == pytest.approx(0.195)
    assert "baselines.md" in e.step_source


def test_faster_gpu_is_faster_and_bigger_batch_is_fewer_steps(tmp_path, cal):
    spec, scan = reference_job(tmp_path)
    inputs = inputs_from_job(spec, scan, cal)
    s4090 = estimate_offer(inputs, offer(), cal).seconds_per_step
    s3060 = estimate_offer(inputs, offer(gpu_name="RTX 3060", vram_gb=12), cal).seconds_per_step
    assert s3060 > s4090
    spec8 = dataclasses.replace(spec, training=dataclasses.replace(spec.training, batch_size=8))
    inputs8 = inputs_from_job(spec8, scan, cal)
    assert inputs8.steps < inputs.steps
    assert inputs8.vram_needed_gb > inputs.vram_needed_gb


def test_two_gpus_halve_the_steps(tmp_path, cal):
    spec, scan = reference_job(tmp_path)
    inputs = dataclasses.replace(inputs_from_job(spec, scan, cal), gpu_count=2)
    one = estimate_offer(inputs, offer(), cal)
    two = estimate_offer(inputs, offer(gpu_count=2, price_per_hour=0.7), cal)
    assert two.phases.train < one.phases.train * 0.6


def test_cached_image_skips_the_pull(tmp_path, cal):
    spec, scan = reference_job(tmp_path)
    inputs = inputs_from_job(spec, scan, cal)
    assert estimate_offer(inputs, offer(), cal).phases.image_pull > 0
    assert estimate_offer(inputs, offer(has_image_cached=True), cal).phases.image_pull == 0


def test_storage_billed_on_top(tmp_path, cal):
    spec, scan = reference_job(tmp_path)
    inputs = inputs_from_job(spec, scan, cal)
    e = estimate_offer(inputs, offer(storage_price_gb_month=0.2), cal)
    assert e.storage_cost == pytest.approx(0.2 * inputs.disk_gb * e.total_seconds / 3600 / 730)
    assert e.total_cost == pytest.approx(e.compute_cost + e.storage_cost)


# -- exclusion rules --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change,resources,reason",
    [
        (dict(gpu_name="RTX 3070", vram_gb=8.0), None, "too little VRAM"),
        (dict(cuda_version=11.8), None, "CUDA 11.8 too old"),
        (dict(inet_down_mbps=20.0), None, "slow network"),
        (dict(price_per_hour=0.9), Resources(max_price_per_hour=0.5), "over max $/h"),
        (dict(reliability=0.9), Resources(min_reliability=0.98), "reliability 0.900 below 0.98"),
        (dict(price_per_hour=5.0), Resources(max_cost=0.5), "over max_cost $0.50"),
        (dict(gpu_name="RTX 3090"), Resources(gpus=("RTX 4090", "A100")), "not one of the GPUs"),
        (dict(interruptible=True), Resources(), "interruptible"),
        (dict(secure_cloud=False), Resources(secure_cloud_only=True), "not secure cloud"),
        (dict(vram_gb=16.0), Resources(min_vram_gb=20), "under min_vram_gb"),
        (dict(inet_down_mbps=300.0), Resources(min_inet_down_mbps=500), "slow network"),
    ],
)
def test_exclusion_rules(tmp_path, cal, change, resources, reason):
    spec, scan = reference_job(tmp_path)
    inputs = inputs_from_job(spec, scan, cal)
    if "too little VRAM" in reason:
        inputs = dataclasses.replace(inputs, vram_needed_gb=17.0)  # an SDXL-sized need
    ok = estimate_offer(inputs, offer(), cal, resources)
    assert ok.fits, ok.excluded
    bad = estimate_offer(inputs, offer(**change), cal, resources)
    assert not bad.fits
    assert reason in bad.excluded


def test_sdxl_job_excludes_a_16gb_card(tmp_path, cal):
    spec, scan = reference_job(tmp_path)
    spec = dataclasses.replace(
        spec,
        model=ModelConfig(family="sdxl", base="stabilityai/stable-diffusion-xl-base-1.0"),
        dataset=dataclasses.replace(spec.dataset, resolution=(1024, 1024)),
    )
    inputs = inputs_from_job(spec, scan, cal)
    e = estimate_offer(inputs, offer(gpu_name="RTX 4080", vram_gb=16.0), cal)
    assert "too little VRAM for this job" in e.excluded
    assert estimate_offer(inputs, offer(gpu_name="A100", vram_gb=80.0, price_per_hour=1.0), cal).fits


def test_cpu_offer_has_no_vram_limit(tmp_path, cal):
    spec, scan = reference_job(tmp_path)
    spec = dataclasses.replace(
        spec, model=ModelConfig(family="sd15", base="builtin:tiny-sd15"), resources=Resources(provider="local")
    )
    inputs = inputs_from_job(spec, scan, cal)
    assert inputs.family == "tiny" and inputs.model_download_gb == 0
    local = Offer(
        provider="local",
        id="localhost",
        gpu_name="CPU (2 cores)",
        gpu_count=0,
        vram_gb=0.0,
        price_per_hour=0.0,
        reliability=1.0,
        has_image_cached=True,
    )
    e = estimate_offer(inputs, local, cal, spec.resources)
    assert e.fits, e.excluded
    assert e.total_cost == 0
    assert e.phases.image_pull == 0 and e.phases.model_download == 0


# -- ranking ----------------------------------------------------------------------------------------------------
def test_rank_fitting_first_by_total_cost(tmp_path, cal):
    spec, scan = reference_job(tmp_path)
    inputs = inputs_from_job(spec, scan, cal)
    offers = [
        offer(id="h100", gpu_name="H100 SXM", vram_gb=80, price_per_hour=2.2),
        offer(id="cheap-slow-net", price_per_hour=0.1, inet_down_mbps=10),
        offer(id="4090", price_per_hour=0.35),
        offer(id="3090", gpu_name="RTX 3090", price_per_hour=0.22),
        offer(id="too-dear", price_per_hour=0.9),
    ]
    ranked = rank(inputs, offers, cal, Resources(max_price_per_hour=0.8))
    fitting = [e for e in ranked if e.fits]
    assert [e.offer.id for e in fitting] == ["3090", "4090"] or [e.offer.id for e in fitting] == ["4090", "3090"]
    assert [e.total_cost for e in fitting] == sorted(e.total_cost for e in fitting)
    assert all(e.fits for e in ranked[: len(fitting)])
    assert not any(e.fits for e in ranked[len(fitting) :])
    assert {e.offer.id for e in ranked if not e.fits} == {"cheap-slow-net", "h100", "too-dear"}
    # Dollars per LoRA, not per hour: the cheapest hourly offer is not necessarily first.
    assert fitting[0].total_cost == min(e.total_cost for e in fitting)


# -- calibration ------------------------------------------------------------------------------------------------
def test_measured_calibration_overrides_shipped(tmp_path, home, cal):
    spec, scan = reference_job(tmp_path)
    inputs = inputs_from_job(spec, scan, cal)
    before = estimate_offer(inputs, offer(), cal)
    assert before.step_kind == "scaled"
    measured = Measured(
        boot_s=before.phases.image_pull + 30.0,
        train_s=2500 * 0.5,
        steps_done=2500,
        upload_s=10.0,
        upload_bytes=50_000_000,
        total_s=before.total_seconds * 1.4,
        cost=0.2,
    )
    record_measurement(before, inputs, measured, job_id="job-1", home=home, clock=lambda: 1_700_000_000.0)
    assert len(read_measurements(home)) == 1
    after_cal = load_calibration(home)
    after = estimate_offer(inputs, offer(id="other-host"), after_cal)
    assert after.step_kind == "measured"
    assert after.seconds_per_step == pytest.approx(0.5)
    assert "job job-1" in after.step_source
    assert after.phases.boot == pytest.approx(30.0)  # the pull predicted for that job is not counted twice
    assert after.phases.upload == pytest.approx(inputs.dataset_bytes / 5_000_000)  # 5 MB/s measured
    # Another GPU keeps the shipped/scaled figure, and a different batch scales from the measured row.
    assert estimate_offer(inputs, offer(gpu_name="RTX 3090"), after_cal).step_kind == "scaled"
    spec4 = dataclasses.replace(spec, training=dataclasses.replace(spec.training, batch_size=4))
    scaled = estimate_offer(inputs_from_job(spec4, scan, after_cal), offer(), after_cal)
    assert scaled.step_kind == "scaled" and "measured: job job-1" in scaled.step_source
    accuracy = after_cal.accuracy()
    assert accuracy is not None
    assert accuracy.time_ratios() == [pytest.approx(1.4)]
    assert "1.40× the estimated time" in accuracy.text()


def test_median_of_recent_measurements(tmp_path, home, cal):
    spec, scan = reference_job(tmp_path)
    inputs = inputs_from_job(spec, scan, cal)
    e = estimate_offer(inputs, offer(), cal)
    for i, sps in enumerate([9.0, 0.30, 0.32, 0.34]):  # the odd old run falls out of the last three
        record_measurement(e, inputs, Measured(train_s=sps * 100, steps_done=100), job_id=f"j{i}", home=home)
    got = estimate_offer(inputs, offer(), load_calibration(home))
    assert got.seconds_per_step == pytest.approx(0.32)


def test_corrupt_measurement_line_is_skipped(home, cal):
    home.mkdir(parents=True)
    (home / "calibration.jsonl").write_text('{"half a line\n', encoding="utf-8")
    assert load_calibration(home).measurements == ()


@pytest.mark.parametrize(
    "name,key",
    [
        ("RTX 4090", "rtx 4090"),
        ("NVIDIA GeForce RTX 4090", "rtx 4090"),
        ("H100 SXM", "h100 sxm"),
        ("NVIDIA H100 80GB HBM3", "h100 sxm"),
        ("H100 PCIE", "h100 pcie"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("A100 PCIE", "a100"),
        ("L40S", "l40s"),
        ("L40", "l40"),
        ("RTX A6000", "rtx a6000"),
        ("NVIDIA RTX 6000 Ada Generation", "rtx 6000 ada"),
        ("RTX 3090 Ti", "rtx 3090 ti"),
        ("RTX 3090", "rtx 3090"),
        ("CPU (8 cores)", "cpu"),
        ("none (CPU only)", "cpu"),
        ("", "cpu"),
        ("Tesla V100", "v100"),
        ("GTX 1080 Ti", "gtx"),
    ],
)
def test_gpu_names_are_canonical(name, key):
    assert gpu_key(name) == key


def test_record_job_from_pipeline_timings(tmp_path, home, cal):
    from types import SimpleNamespace

    from lorarun.runner.price.calibration_record import record_job

    spec, scan = reference_job(tmp_path)
    job = SimpleNamespace(spec=spec, scan=scan)
    timings = {
        "boot": 300.0,
        "upload": 12.0,
        "upload_bytes": 9e6,
        "training": 1400.0,
        "seconds_per_step": 0.45,
        "download": 20.0,
    }
    run = SimpleNamespace(job=job, timings=timings, state=SimpleNamespace(job_id="ref-1"))
    rec = record_job(run=run, offer=offer(), provider="vastai", home=home)
    assert rec.measured.seconds_per_step == pytest.approx(0.45)
    assert rec.measured.total_s == pytest.approx(1732.0)
    assert rec.predicted_total_s and rec.predicted_seconds_per_step
    again = estimate_offer(inputs_from_job(spec, scan, cal), offer(), load_calibration(home))
    assert again.step_kind == "measured" and again.seconds_per_step == pytest.approx(0.45)
    assert record_job(run=SimpleNamespace(job=job, timings={}, state=run.state), offer=offer(), home=home) is None


def test_stock_install_and_image_start_up_are_recorded_and_the_install_is_learned(tmp_path, home, cal):
    from types import SimpleNamespace

    from lorarun.runner.price.calibration_record import record_job
    from lorarun.runner.run import stock

    spec, scan = reference_job(tmp_path)
    stock_spec = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, image="stock"))
    inputs = inputs_from_job(stock_spec, scan, cal)
    assert estimate_offer(inputs, offer(), cal).phases.install == pytest.approx(stock.INSTALL_SECONDS)
    timings = {
        "boot": 300.0,
        "upload": 12.0,
        "training": 1400.0,
        "seconds_per_step": 0.45,
        "download": 20.0,
        "install": 42.0,
        "startup_sshd_up": 1.5,
        "startup_engine_importable": 6.25,
    }
    run = SimpleNamespace(
        job=SimpleNamespace(spec=stock_spec, scan=scan), timings=timings, state=SimpleNamespace(job_id="stock-1")
    )
    rec = record_job(run=run, offer=offer(), provider="vastai", home=home)
    assert rec.measured.install_s == pytest.approx(42.0) and rec.measured.startup_s == pytest.approx(6.25)
    learned = load_calibration(home)
    assert learned.install_seconds("vastai", stock.INSTALL_SECONDS) == (42.0, "measured (vastai, 1 job(s))")
    assert estimate_offer(inputs, offer(), learned).phases.install == pytest.approx(42.0)
    # An image job installs nothing, measured or not.
    assert estimate_offer(inputs_from_job(spec, scan, learned), offer(), learned).phases.install == 0.0


def test_batch_on_one_rental_boots_once(tmp_path, cal):
    from lorarun.runner.price.estimate import estimate_batch_offer, rank_batch

    spec, scan = reference_job(tmp_path)
    inputs = inputs_from_job(spec, scan, cal)
    single = estimate_offer(inputs, offer(), cal)
    batch = estimate_batch_offer([inputs, inputs], offer(), cal)
    assert batch.fits
    assert batch.phases.boot == pytest.approx(single.phases.boot)  # once, not twice
    assert batch.phases.model_download == pytest.approx(single.phases.model_download)  # same base model
    assert batch.phases.train == pytest.approx(2 * single.phases.train)
    assert single.total_cost < batch.total_cost < 2 * single.total_cost
    assert sum(batch.per_job_costs) == pytest.approx(batch.total_cost)
    assert batch.per_job_costs[0] > batch.per_job_costs[1]  # the first job carries the start-up
    # max_cost applies to the batch total; a job's own exclusion names the job.
    capped = Resources(max_cost=(single.total_cost + batch.total_cost) / 2)
    assert estimate_offer(inputs, offer(), cal, capped).fits
    assert "over max_cost" in estimate_batch_offer([inputs, inputs], offer(), cal, capped).excluded
    big = dataclasses.replace(inputs, vram_needed_gb=40.0)
    assert "job 2: too little VRAM" in estimate_batch_offer([inputs, big], offer(), cal).excluded
    ranked = rank_batch([inputs, inputs], [offer(id="a", price_per_hour=0.5), offer(id="b")], cal)
    assert [e.offer.id for e in ranked] == ["b", "a"]


def test_engine_start_up_is_learned_from_the_wall_time(tmp_path, home, cal):
    spec, scan = reference_job(tmp_path)
    inputs = inputs_from_job(spec, scan, cal)
    e = estimate_offer(inputs, offer(), cal)
    wall = 100.0 + 2500 * 0.3 + e.phases.sampling  # 100 s outside the step loop and sampling
    record_measurement(
        e, inputs, Measured(train_s=2500 * 0.3, steps_done=2500, training_wall_s=wall), job_id="j", home=home
    )
    learned = estimate_offer(inputs, offer(), load_calibration(home))
    assert learned.phases.prepare == pytest.approx(100.0)
    assert estimate_offer(inputs, offer(gpu_name="RTX 3090"), load_calibration(home)).phases.prepare == pytest.approx(
        e.phases.prepare
    )  # another GPU keeps the shipped figure


def test_vram_exclusion_says_what_would_fit(tmp_path, cal):
    spec, scan = reference_job(tmp_path)
    spec = dataclasses.replace(
        spec,
        model=ModelConfig(family="sdxl", base="stabilityai/stable-diffusion-xl-base-1.0"),
        dataset=dataclasses.replace(spec.dataset, resolution=(1024, 1024)),
    )
    e = estimate_offer(inputs_from_job(spec, scan, cal), offer(vram_gb=24.0), cal)
    assert "too little VRAM for this job" in e.excluded
    assert "to fit: " in e.excluded and ("gradient_checkpointing" in e.excluded or "batch_size" in e.excluded)


def test_shipped_table_is_sourced_and_consistent(cal):
    # Every shipped figure says where it came from; every GPU a row names has a FLOP figure to scale with.
    gpus = {k for k, _, _ in cal.gpus}
    for row in cal.shipped:
        assert row.source.strip() and row.seconds_per_step > 0
        assert row.gpu in gpus, row.gpu
        assert row.family in dict(cal.families)
    # A faster card is never predicted slower than a slower one for the same SDXL step.
    opts = StepOptions()
    s4090 = cal.seconds_per_step("RTX 4090", "sdxl", (1024, 1024), 1, opts).seconds
    s3090 = cal.seconds_per_step("RTX 3090", "sdxl", (1024, 1024), 1, opts).seconds
    assert s4090 < s3090


def test_flux_offers_excluded_by_vram_and_system_ram_per_quantisation(tmp_path, cal):
    """Flux at 1024 with checkpointing, rank 16: bf16 needs an 80 GB-class card (~30 GB), NF4 fits a 12 GB one;
    a machine with too little system RAM to load the base is excluded with that reason."""
    from lorarun.image.flux_config import FluxConfig

    spec, scan = reference_job(tmp_path, gradient_checkpointing=True)
    flux = dataclasses.replace(
        spec,
        model=ModelConfig(family="flux", base="black-forest-labs/FLUX.1-dev"),
        dataset=dataclasses.replace(spec.dataset, resolution=(1024, 1024)),
        training=dataclasses.replace(spec.training, network_dim=16, batch_size=1),
    )
    bf16 = inputs_from_job(flux, scan, cal)
    nf4 = inputs_from_job(dataclasses.replace(flux, flux=FluxConfig(quantization="nf4")), scan, cal)
    assert bf16.vram_needed_gb > 28 and nf4.vram_needed_gb < 12 and nf4.quantization == "nf4"
    on_4090 = estimate_offer(bf16, offer(vram_gb=24.0, ram_gb=128.0), cal)
    assert "too little VRAM" in on_4090.excluded and "flux.quantization: int8" in on_4090.excluded
    assert estimate_offer(nf4, offer(vram_gb=12.0, ram_gb=64.0), cal).fits
    small_ram = estimate_offer(nf4, offer(vram_gb=24.0, ram_gb=16.0), cal)
    assert "too little system RAM to load the nf4 Flux base" in small_ram.excluded
    assert "host memory" in small_ram.excluded
    assert estimate_offer(nf4, offer(vram_gb=24.0), cal).fits  # RAM not stated by the provider: not judged
