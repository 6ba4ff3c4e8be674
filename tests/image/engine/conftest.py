"""Fixtures for the engine tests: tiny kohya datasets and the shared asset cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .engine_helpers import NO_GRID, RESUME_TRAINING, engine_config, run_engine, write_config
from .make_dataset import make_dataset


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    train, _ = make_dataset(tmp_path_factory.mktemp("ds"), n_images=4, repeats=1)
    return train


@pytest.fixture(scope="session")
def dataset_with_reg(tmp_path_factory) -> tuple[Path, Path]:
    return make_dataset(tmp_path_factory.mktemp("dsreg"), n_images=4, repeats=1, with_reg=True)


@pytest.fixture(scope="session")
def asset_cache(tmp_path_factory) -> Path:
    """Generated tokenizer files shared by every test process (built once)."""
    path = Path(os.environ.get("LORARUN_ASSET_CACHE") or tmp_path_factory.mktemp("assets"))
    os.environ["LORARUN_ASSET_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def uninterrupted_run(tmp_path_factory, dataset, asset_cache) -> Path:
    """The output folder of one uninterrupted engine run of the resume tests' job (RESUME_TRAINING), the run every
    killed-and-resumed run must match bit for bit. One run per test process serves test_resume.py,
    test_resume_anywhere.py and test_resume_every_n_steps.py: each used to make its own run of this same config
    (same seed, same data), and the tests only read its files."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    result = run_engine(write_config(tmp, engine_config(tmp, dataset, training=RESUME_TRAINING, sample=NO_GRID)))
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp / "out"
