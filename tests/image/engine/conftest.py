"""Fixtures for the engine tests: tiny kohya datasets and the shared asset cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
