"""The example jobs in jobs/ (written the way a guide's user writes them) are valid job files: `lorarun validate`
would pass them once their dataset folder exists (which the spec alone does not look at)."""

from pathlib import Path

import pytest
from support.paths import JOBS

from lorarun.runner.job.load import load_job


@pytest.mark.parametrize("name, family", [("flux-dev", "flux"), ("sd15", "sd15"), ("sdxl", "sdxl")])
def test_example_job_is_valid(name, family):
    spec = load_job(JOBS / f"{name}.yaml")
    assert spec.model.family == family and spec.resources.provider == "vastai"
    # the folder the file's comment tells the user to fill: ./dataset beside jobs/, where `lorarun validate
    # jobs/<name>.yaml` is run (issue 23.7; the job's paths are relative to the job file)
    assert spec.dataset_dir == JOBS.parent / "dataset"
    assert spec.output_dir == JOBS.parent / "output" / spec.name
    engine = spec.engine_config(job_id="j", dataset_dir="/d", reg_dir=None, output_dir="/o")
    engine.validate()
    if family == "flux":
        assert engine.flux.quantization == "nf4" and engine.sample.width == 1024 and engine.sample.steps == 20


@pytest.mark.parametrize("name", ["flux-dev", "sd15", "sdxl"])
def test_following_the_example_comment_finds_the_dataset(name, tmp_path, monkeypatch):
    """Do what the comment says, in a fresh folder: copy the example under jobs/, put the images in ./dataset,
    validate from there. The scan must find them (it used to look in jobs/dataset)."""
    import shutil

    from helpers_dataset import make_dataset

    from lorarun.runner.job.validate import validate_job

    (tmp_path / "jobs").mkdir()
    shutil.copy(JOBS / f"{name}.yaml", tmp_path / "jobs" / f"{name}.yaml")
    comment = (JOBS / f"{name}.yaml").read_text(encoding="utf-8").split("\nname:")[0]
    assert "./dataset" in comment and "dataset/10_mychar/001.png" in comment
    make_dataset(tmp_path / "dataset", {"10_mychar": 4}, size=(64, 64))
    monkeypatch.chdir(tmp_path)
    job = validate_job(Path("jobs") / f"{name}.yaml")
    assert job.scan.num_train_images == 40
    assert job.spec.output_dir == tmp_path / "output" / job.spec.name
