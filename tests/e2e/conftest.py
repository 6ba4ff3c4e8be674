import os

import pytest
import support.cloud
from support.cloud import cloud, vast_cloud  # noqa: F401 - fake provider APIs whose instances are real sshd processes
from support.shared_clock import quick_waits


@pytest.fixture(autouse=True)
def _quick_waits(monkeypatch):
    """The pipeline's polls sleep at most a quarter second here (tests/support/shared_clock.py): a fake provider
    boots in a fixed number of answers and a tiny job trains in seconds, so the production cadences (2 s per boot
    look at Vast, 2 s per monitor round) would be most of an end-to-end test's wall time, spent idle.
    Not under bench/batch_wall.py: the wall-time ratio it reports is measured with the production cadences."""
    if os.environ.get("LORARUN_BENCH_BATCH_WALL"):
        return
    quick_waits(monkeypatch)


@pytest.fixture(autouse=True)
def _quick_grid(monkeypatch):
    """Tiny jobs here make their grid with 2 sampling steps, not the default 20 (support/cloud.py): the same grid
    and samples come home through the same code, in a tenth of the engine's time (3 s of a 9 s rental before)."""
    monkeypatch.setattr(support.cloud, "TINY_SAMPLE_STEPS", 2)
