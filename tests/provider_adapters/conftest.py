"""Contract-test fixtures: each adapter against its fake over real HTTP on 127.0.0.1, never really sleeping."""

from __future__ import annotations

import pytest
from fakes.vast_server import FakeVast


class RecordingSleep:
    """Stands in for time.sleep: records the waits and advances a fake clock instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.now = 0.0

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def sleeper() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def vast():
    with FakeVast() as fake:
        yield fake


@pytest.fixture
def runpod():
    from fakes.runpod_server import FakeRunPod

    with FakeRunPod() as fake:
        yield fake
