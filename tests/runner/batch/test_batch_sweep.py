"""Sweep expansion (runner/batch/sweep.py): a base job and a grid or list of overrides → one job file per variant,
each with its own name and output folder, every relative path meaning what it means in the base."""

from __future__ import annotations

import pytest
import yaml
from helpers_dataset import make_dataset

from lorarun.runner.batch.sweep import MAX_VARIANTS, load_sweep, variant_name
from lorarun.runner.cli.app import main
from lorarun.runner.errors import InvalidJob, SpecError
from lorarun.runner.job.validate import validate_job

BASE = """
name: mychar
model: {base: "builtin:tiny-sd15"}
dataset: {path: data, resolution: 64, min_bucket_reso: 32, max_bucket_reso: 128, bucket_reso_steps: 16}
training: {epochs: 1, batch_size: 2, network_dim: 4, network_alpha: 2, optimizer: AdamW, learning_rate: 1.0e-4}
sample: {prompts: ["a photo of mychar"], seed: 7}
resources: {provider: local}
output: {dir: out, name: mychar}
"""


@pytest.fixture
def folder(tmp_path):
    make_dataset(tmp_path / "data", {"2_mychar": 2})
    return tmp_path


def test_grid_gives_every_combination_with_its_own_name_and_output(folder):
    sweep = folder / "sweep.yaml"
    sweep.write_text(BASE + "sweep:\n  rentals: 2\n  grid: {learning_rate: [1e-4, 5e-5], network_dim: [8, 16]}\n")
    loaded = load_sweep(sweep)
    assert loaded.rentals == 2
    names = [v.name for v in loaded.variants]
    assert names == ["mychar-lr0.0001-dim8", "mychar-lr0.0001-dim16", "mychar-lr5e-05-dim8", "mychar-lr5e-05-dim16"]
    jobs = [validate_job(p) for p in loaded.job_files]
    assert [j.spec.training.learning_rate for j in jobs] == [1e-4, 1e-4, 5e-5, 5e-5]  # "1e-4" read as a number
    assert [j.spec.training.network_dim for j in jobs] == [8, 16, 8, 16]
    assert len({j.spec.output_dir for j in jobs}) == 4
    assert all(j.spec.output_dir == folder / "out" / j.spec.name for j in jobs)
    assert all(j.spec.dataset_dir == folder / "data" for j in jobs)  # relative paths still mean the base's
    # Same prompts and seed for every variant: the batch report's grids compare.
    assert {(tuple(j.spec.sample.prompts), j.spec.sample.seed) for j in jobs} == {(("a photo of mychar",), 7)}


def test_list_of_variants_and_a_separate_base_file(folder):
    (folder / "job.yaml").write_text(BASE)
    sweep = folder / "sweep.yaml"
    sweep.write_text("base: job.yaml\nvariants:\n  - {network_dim: 32, network_alpha: 16}\n  - {training.epochs: 2}\n")
    loaded = load_sweep(sweep)
    assert [v.name for v in loaded.variants] == ["mychar-dim32-alpha16", "mychar-epochs2"]
    first, second = (validate_job(p).spec for p in loaded.job_files)
    assert (first.training.network_dim, first.training.network_alpha) == (32, 16)
    assert second.training.max_train_epochs == 2
    assert "do not edit" in loaded.job_files[0].read_text()


def test_every_problem_listed_before_anything_is_written(folder):
    sweep = folder / "sweep.yaml"
    sweep.write_text(
        BASE + "sweep:\n  rentals: 0\n  colour: red\n  grid: {learnin_rate: [1], network_dim: 16, output.name: [a]}\n"
    )
    with pytest.raises(InvalidJob) as caught:
        load_sweep(sweep)
    text = "\n".join(caught.value.problems)
    assert "rentals" in text and "colour" in text and "learnin_rate" in text
    assert "network_dim: expected a non-empty list" in text
    assert "set per variant" in text
    assert not list(folder.glob(".sweep-*.yaml"))


def test_too_many_variants_is_refused(folder):
    sweep = folder / "sweep.yaml"
    grid = {"learning_rate": [1e-4 * (i + 1) for i in range(MAX_VARIANTS + 1)]}
    sweep.write_text(BASE + yaml.safe_dump({"sweep": {"grid": grid}}))
    with pytest.raises(InvalidJob, match="at most"):
        load_sweep(sweep)


def test_not_a_sweep(folder):
    (folder / "plain.yaml").write_text(BASE)
    with pytest.raises(SpecError, match="sweep"):
        load_sweep(folder / "plain.yaml")


def test_variant_names_are_portable_file_names():
    assert variant_name("my char", [("training", "optimizer_type", "AdamW8bit")]) == "my_char-optimizer_typeAdamW8bit"
    assert variant_name(".x", [("training", "learning_rate", 0.5)]) == "x-lr0.5"


def test_cli_refuses_a_bad_sweep_with_exit_2_and_one_line(folder, capsys):
    sweep = folder / "sweep.yaml"
    sweep.write_text(BASE + "sweep:\n  grid: {nope: [1]}\n")
    assert main(["sweep", str(sweep), "--yes"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err
