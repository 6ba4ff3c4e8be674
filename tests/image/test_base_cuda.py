"""The CUDA minimum lorarun asks of a machine is the one the image is built on."""

from __future__ import annotations

import re

from support.paths import REPO

from lorarun.image.base_cuda import BASE_CUDA, cuda_text
from lorarun.provider_adapters.base import ResourceRequest
from lorarun.provider_adapters.vastai.adapter import build_query
from lorarun.runner.price.estimate import MIN_CUDA

ROOT = REPO


def test_the_dockerfiles_base_image_is_on_the_cuda_lorarun_asks_for():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M).group(1)
    found = re.search(r"cuda(\d+\.\d+)", base)
    assert found and float(found.group(1)) == BASE_CUDA, base


def test_offers_and_creates_ask_for_it():
    assert MIN_CUDA == BASE_CUDA and ResourceRequest().min_cuda == BASE_CUDA
    assert build_query(ResourceRequest())["cuda_max_good"] == {"gte": BASE_CUDA}
    assert cuda_text() == "12.8"
