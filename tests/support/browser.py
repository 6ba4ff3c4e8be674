"""A real headless Chromium for the UI tests: Debian's `chromium` and `chromium-driver` (.ci/run installs them),
driven by Selenium with the driver's path given explicitly, so selenium-manager never downloads a browser.

Missing pieces skip the test loudly: the reason names what to install."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths: tuple[str, ...], env: str) -> str | None:
    given = os.environ.get(env)
    if given:
        return given if os.access(given, os.X_OK) else None
    return next((p for p in paths if os.access(p, os.X_OK)), None)


def require_browser() -> tuple[str, str]:
    """(chromium, chromedriver), or a loud skip that says how to get them."""
    chromium = _first(CHROMIUM_CANDIDATES, "LORARUN_TEST_CHROMIUM")
    driver = _first(DRIVER_CANDIDATES, "LORARUN_TEST_CHROMEDRIVER")
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    if chromium is None:
        missing.append("chromium (apt-get install -y chromium)")
    if driver is None:
        missing.append("chromedriver (apt-get install -y chromium-driver)")
    if missing:
        reason = "BROWSER TESTS SKIPPED: no " + ", no ".join(missing) + "; .ci/run installs them"
        warnings.warn(reason, stacklevel=2)
        pytest.skip(reason)
    return chromium, driver


@contextlib.contextmanager
def headless_chromium(width: int = 1280, height: int = 1000) -> Iterator[object]:
    chromium, driver_path = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",  # nothing leaves 127.0.0.1
        "--disable-component-update",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager, should anything call it, stays offline
    service = Service(executable_path=driver_path)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
