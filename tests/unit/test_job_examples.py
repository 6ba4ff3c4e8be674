"""The example jobs in jobs/ (written the way a guide's user writes them) are valid job files: `lorarun validate`
would pass them once their dataset folder exists (which the spec alone does not look at)."""

from pathlib import Path

import pytest

from lorarun.runner.job.load import load_job

JOBS = Path(__file__).resolve().parents[2] / "jobs"


@pytest.mark.parametrize("name, family", [("flux-dev", "flux"), ("sd15", "sd15"), ("sdxl", "sdxl")])
def test_example_job_is_valid(name, family):
    spec = load_job(JOBS / f"{name}.yaml")
    assert spec.model.family == family and spec.resources.provider == "vastai"
    assert spec.dataset_dir == JOBS / "dataset"  # the folder the file's comment tells the user to fill
    engine = spec.engine_config(job_id="j", dataset_dir="/d", reg_dir=None, output_dir="/o")
    engine.validate()
    if family == "flux":
        assert engine.flux.quantization == "nf4" and engine.sample.width == 1024 and engine.sample.steps == 20
