"""Container tests: the instance is a Docker container of our image (tests/support/container.py).

Every test here is marked `container`: left out of `make test` (pyproject addopts), run by `make test-container`
from .ci/run after the fast suite. Without a Docker engine they skip with the reason; the static Dockerfile checks
(tests/runner/run/test_dockerfile_static.py) still run in the fast suite."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.runpod_server import API_KEY as RUNPOD_KEY
from fakes.runpod_server import FakeRunPod
from fakes.vast_server import API_KEY as VAST_KEY
from fakes.vast_server import FakeVast
from support.container import ContainerHost, InstanceDetails, docker_skip_reason, engine_image, test_base_image


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.container)
            item.add_marker(pytest.mark.slow)
            # The first test may build the image (minutes; far more under the vfs storage driver).
            item.add_marker(pytest.mark.timeout(3600))


@pytest.fixture(scope="session")
def docker_ready() -> None:
    reason = docker_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def base_image(docker_ready) -> str:
    """The conda-style test base: also what the stock path runs on (the providers' stock PyTorch image)."""
    return test_base_image()


@pytest.fixture(scope="session")
def built_image(base_image) -> str:
    """The real Dockerfile built on the test base by `lorarun image build`'s code."""
    return engine_image(base_image)


@contextlib.contextmanager
def container_cloud(name: str, monkeypatch) -> Iterator[tuple[object, ContainerHost]]:
    """A fake provider API on 127.0.0.1 whose instances are containers started with that provider's semantics.
    The fakes' own `on_create` hook starts them; the image and onstart are what the create call asked for."""
    fake = None

    def details(instance_id: str) -> InstanceDetails:
        if name == "vastai":
            inst = fake.instances[int(instance_id)]
            return InstanceDetails(inst.image, inst.onstart)
        return InstanceDetails(fake.pods[instance_id].image)

    host = ContainerHost(name, details)
    if name == "vastai":
        fake = FakeVast(boot_polls=2, on_create=host.on_create, on_destroy=host.on_destroy)
        fake.start()
        monkeypatch.setenv("VAST_URL", fake.url)
        monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
    else:
        fake = FakeRunPod(boot_polls=2, on_create=host.on_create, on_destroy=host.on_destroy)
        fake.start()
        monkeypatch.setenv("LORARUN_RUNPOD_URL", fake.url)  # lorarun's own variable (runpod_client.py)
        monkeypatch.setenv("LORARUN_RUNPOD_GRAPHQL_URL", fake.url + "/graphql")
        monkeypatch.setenv("RUNPOD_API_KEY", RUNPOD_KEY)
    try:
        yield fake, host
    finally:
        fake.stop()
        host.close()
