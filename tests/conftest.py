"""Suite-wide guards: every test gets its own lorarun home, and no test reaches past 127.0.0.1."""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)  # so `fakes`, `support` import the same way from every test folder

# The SSH fixtures (a real sshd on a loopback port, a fake instance host, transports to them) for every folder that
# needs one: tests/sshlink, tests/runner/remote, tests/provider_adapters (the ssh provider) and the suites.
from support.fixtures import *  # noqa: E402, F403

# A suite started in the background by a non-interactive shell (`cmd &`, nohup, some CI runners) inherits SIGINT
# ignored, and Python then never raises KeyboardInterrupt. The Ctrl-C scenarios send SIGINT to the test's own
# process and expect the controller's handling of it; give them Python's default, whoever started the suite.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_address(address) -> None:
    if isinstance(address, tuple) and address:
        host = address[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise AssertionError(f"test tried to connect to {host!r}: tests may only reach 127.0.0.1") from None
            return
        if not ip.is_loopback:
            raise AssertionError(f"test tried to connect to {host}: tests may only reach 127.0.0.1")


def _guarded_connect(self, address):
    _check_address(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check_address(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


@pytest.fixture(autouse=True)
def lorarun_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("lorarun-home")
    monkeypatch.setenv("LORARUN_HOME", str(home))
    for var in (
        "VAST_API_KEY",
        "RUNPOD_API_KEY",
        "VAST_URL",
        "LORARUN_TEST_HOLD",
        "LORARUN_TEST_HOLD_DIR",
        "LORARUN_TEST_STEP_SECONDS",  # image/step_pacing.py: only a test that means it paces an engine
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # hub ids are checked against the cache only; tests use a fake hub
    monkeypatch.setenv("LORARUN_CONFIG", str(home / "user-config.toml"))  # never the developer's own defaults
    return home


@pytest.fixture
def holds(tmp_path):
    """Hold points (image/hold_points.py): stop a controller or engine process at a named point, act, release."""
    from support.holds import HoldPoints

    return HoldPoints(tmp_path / "holds")


@pytest.fixture(autouse=True)
def _wide_console():
    """Tests read what the CLI prints; a wide console keeps table cells on one line (layout is not under test)."""
    from lorarun.runner.console import console, err_console

    widths = console.width, err_console.width
    console.width = err_console.width = 200
    yield
    console.width, err_console.width = widths


def _expected_cost(item: pytest.Item) -> int:
    """0 for whole pipelines (e2e: rentals, sshd, the engine), 1 for other tests that train or run a pipeline, 2 for
    the rest: a rough order of how long a test takes, without keeping timings anywhere."""
    if "e2e" in Path(item.nodeid.split("::")[0]).parts:
        return 0
    return 1 if item.get_closest_marker("slow") else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Longest first: with two workers (`make test`, `--dist worksteal`) a minute-long pipeline test picked up last
    # leaves the other core idle for that minute; started first, the short tests fill the gaps around it. A stable
    # sort keeps each group in collection order, so a single-process run reads as before within a group.
    items.sort(key=_expected_cost)
