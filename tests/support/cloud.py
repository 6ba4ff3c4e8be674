"""Cloud fixtures for end-to-end and fault tests: a fake provider API whose instances are real sshd processes on 127.0.0.1, serving a
temporary folder, with the real engine training a tiny model on CPU behind them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes.runpod_server import API_KEY as RUNPOD_KEY
from fakes.runpod_server import FakeRunPod
from fakes.vast_server import API_KEY as VAST_KEY
from fakes.vast_server import FakeVast
from helpers_dataset import make_dataset
from support.fixtures import _require_sshd
from support.sshd import FakeInstanceHost


@dataclass
class Cloud:
    name: str  # provider name as in the job file
    fake: object
    host: FakeInstanceHost

    def instance_ids(self) -> list[str]:
        table = getattr(self.fake, "instances", None) or getattr(self.fake, "pods", {})
        return [str(i) for i in table]


@contextlib.contextmanager
def fake_cloud(name: str, tmp_path: Path, monkeypatch) -> Iterator[Cloud]:
    """The fake API of `name` on 127.0.0.1, its instances real sshd processes, the environment pointing at it."""
    _require_sshd()
    host = FakeInstanceHost(tmp_path / "instances")
    if name == "vastai":
        fake = FakeVast(boot_polls=2, on_create=host.on_create, on_destroy=host.on_destroy)
        fake.start()
        monkeypatch.setenv("VAST_URL", fake.url)
        monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
    else:
        fake = FakeRunPod(boot_polls=2, on_create=host.on_create, on_destroy=host.on_destroy)
        fake.start()
        monkeypatch.setenv("LORARUN_RUNPOD_URL", fake.url)
        monkeypatch.setenv("LORARUN_RUNPOD_GRAPHQL_URL", fake.url + "/graphql")
        monkeypatch.setenv("RUNPOD_API_KEY", RUNPOD_KEY)
    try:
        yield Cloud(name, fake, host)
    finally:
        fake.stop()
        host.close()


@pytest.fixture(params=["vastai", "runpod"])
def cloud(request, tmp_path, monkeypatch):
    with fake_cloud(request.param, tmp_path, monkeypatch) as c:
        yield c


@pytest.fixture
def vast_cloud(tmp_path, monkeypatch):
    with fake_cloud("vastai", tmp_path, monkeypatch) as c:
        yield c


@pytest.fixture
def runpod_cloud(tmp_path, monkeypatch):
    with fake_cloud("runpod", tmp_path, monkeypatch) as c:
        yield c


# Sampling steps of the grid in a tiny job, when set (tests/e2e/conftest.py sets 2: the same grid, made in a tenth of
# the time); None leaves the section as the engine's default (20 steps) and the job file as the fault tests know it.
TINY_SAMPLE_STEPS: int | None = None


def tiny_job(
    tmp_path: Path,
    provider: str,
    *,
    epochs: int = 2,
    extra_training: str = "",
    extra_resources: str = "",
    images: int = 2,
) -> Path:
    """The smallest real job: a few images, a tiny SD1.5-shaped model, a checkpoint every epoch."""
    make_dataset(tmp_path / "data", {"2_mychar": images})
    sample_steps = f"  steps: {TINY_SAMPLE_STEPS}\n" if TINY_SAMPLE_STEPS else ""
    job = tmp_path / "job.yaml"
    job.write_text(
        f"""
name: e2e
model:
  base: builtin:tiny-sd15
dataset:
  path: data
  resolution: 64
  min_bucket_reso: 32
  max_bucket_reso: 128
  bucket_reso_steps: 16
training:
  epochs: {epochs}
  batch_size: 2
  network_dim: 4
  network_alpha: 2
  optimizer: AdamW
  mixed_precision: "no"
  save_every_n_epochs: 1
{extra_training}
sample:
  prompts: []
{sample_steps}resources:
  provider: {provider}
  disk_gb: 20
{extra_resources}
output:
  dir: out
  name: e2e_lora
""",
        encoding="utf-8",
    )
    return job


def with_sample(job: Path, block: str) -> None:
    """Replace the sample section tiny_job wrote (whatever its lines) with `block`, which starts with "sample:"."""
    text = job.read_text(encoding="utf-8")
    start = text.index("\nsample:\n") + 1
    end = text.index("\nresources:\n", start) + 1
    job.write_text(text[:start] + block + text[end:], encoding="utf-8")
