import pytest
from support.cloud import cloud, vast_cloud  # noqa: F401 - fake provider APIs whose instances are real sshd processes
from support.shared_clock import quick_waits


@pytest.fixture(autouse=True)
def _quick_waits(monkeypatch):
    """The pipeline's polls sleep at most a quarter second here (tests/support/shared_clock.py): a fake provider
    boots in a fixed number of answers and a tiny job trains in seconds, so the production cadences (2 s per boot
    look at Vast, 2 s per monitor round) would be most of an end-to-end test's wall time, spent idle."""
    quick_waits(monkeypatch)
