import pytest
from helpers_dataset import make_dataset, write_job

from lorarun.runner.errors import SpecError
from lorarun.runner.job.load import load_job


def test_defaults_follow_the_common_sd15_guide(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("model:\n  base: runwayml/stable-diffusion-v1-5\n")
    spec = load_job(job)
    t = spec.training
    assert (t.network_dim, t.network_alpha, t.max_train_epochs) == (32, 16.0, 10)
    assert t.lr_scheduler == "cosine_with_restarts"
    assert t.optimizer_type == "auto"  # AdamW8bit on CUDA, fused AdamW where bitsandbytes/CUDA is missing
    assert spec.dataset.resolution == (512, 512)
    assert spec.resources.provider == ""  # not chosen: the user config, or submit asks (never a silent local)
    assert spec.name == "job"


def test_aliases_paths_and_numbers(tmp_path):
    ds = make_dataset(tmp_path / "data")
    job = write_job(tmp_path / "job.yaml", "data", extra="  unet_lr: '1e-4'\n  steps: 50\n  epochs: null")
    spec = load_job(job)
    assert spec.dataset_dir == ds.resolve()
    assert spec.training.unet_lr == 1e-4  # YAML reads 1e-4 as a string; it is still a number to us
    assert spec.training.max_train_steps == 50 and spec.training.max_train_epochs is None
    assert spec.output_dir == (tmp_path / "output").resolve()


@pytest.mark.parametrize(
    "body, expected",
    [
        ("training:\n  network_dimm: 8\n", "unknown key 'network_dimm'; did you mean 'network_dim'?"),
        ("trainng:\n  epochs: 2\n", "unknown key 'trainng'; did you mean 'training'?"),
        ("training:\n  batch_size: two\n", "training.batch_size: expected a whole number, got 'two'"),
        ("training:\n  optimizer: SGD\n", "training.optimizer_type: unknown optimizer 'SGD'"),
        ("dataset:\n  resolution: 500\n", "not a multiple of bucket_reso_steps"),
        ("model:\n  family: sd3\n", "model.family: unknown family 'sd3'"),
        ("resources:\n  provider: aws\n", "unknown provider 'aws'"),
        (
            "resources:\n  max_cost: -1\n",
            "resources.max_cost: -1 is outside the range a real job has; use a value greater than 0",
        ),
        ("training:\n  unet_lr: 5\n", "training.unet_lr: 5 is outside the range"),
        ("dataset: [1, 2]\n", "dataset: expected a mapping"),
        ("model:\n  base: builtin:huge\n", "unknown built-in model"),
        ("name: x\nmodel: {family: sdxl, v2: true}\n", "model.v2"),
    ],
)
def test_precise_one_line_errors(tmp_path, body, expected):
    job = tmp_path / "job.yaml"
    job.write_text(body)
    with pytest.raises(SpecError) as err:
        load_job(job)
    message = str(err.value)
    assert expected in message
    assert str(job) in message and "\n" not in message


def test_invalid_yaml_names_the_line(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("training:\n  epochs: 2\n bad indent: [\n")
    with pytest.raises(SpecError, match=r"line \d+"):
        load_job(job)


def test_missing_job_file(tmp_path):
    with pytest.raises(SpecError, match="job file not found"):
        load_job(tmp_path / "nope.yaml")


def test_flux_section_only_for_the_flux_family_and_its_numbers_ranged(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("model:\n  family: sd15\nflux:\n  quantization: nf4\n")
    with pytest.raises(SpecError, match="flux: this section applies to model.family flux only"):
        load_job(job)
    for bad, expected in (
        ("guidance_scale: .nan", "flux.guidance_scale: nan is not a finite number"),
        ("discrete_flow_shift: 1000", "flux.discrete_flow_shift: 1000 is outside the range"),
        ("quantization: fp8", "flux.quantization: use one of bf16, int8, nf4"),
    ):
        job.write_text(f"model:\n  family: flux\nflux:\n  {bad}\n")
        with pytest.raises(SpecError, match=expected):
            load_job(job)
    job.write_text("model:\n  family: flux\n  base: black-forest-labs/FLUX.1-schnell\nflux:\n  flavour: schnell\n")
    flux = load_job(job).flux
    assert flux.sampling == "sigmoid" and flux.t5_tokens == 256 and flux.sample_guidance == 0.0
    # captions are encoded once (cached) for Flux, and flow matching has no SD noise options: refused, not ignored
    job.write_text("model:\n  family: flux\ndataset:\n  shuffle_caption: true\ntraining:\n  noise_offset: 0.05\n")
    with pytest.raises(SpecError) as err:
        load_job(job)
    text = "\n".join(getattr(err.value, "problems", [str(err.value)]))
    assert "dataset.shuffle_caption" in text and "training.noise_offset" in text


def test_save_every_n_steps_in_the_job_yaml_and_its_bounds(tmp_path):
    make_dataset(tmp_path / "data")
    spec = load_job(write_job(tmp_path / "job.yaml", "data", extra="  save_every_n_steps: 50"))
    assert spec.training.save_every_n_steps == 50
    for bad in ("0", "-5"):
        job = write_job(tmp_path / "bad.yaml", "data", extra=f"  save_every_n_steps: {bad}")
        with pytest.raises(SpecError, match=r"training\.save_every_n_steps"):
            load_job(job)
