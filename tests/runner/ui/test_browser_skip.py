"""Without Chromium the browser tests skip loudly: a warning and a reason that say what to install."""

from __future__ import annotations

import pytest
from support.browser import require_browser


def test_a_missing_browser_skips_with_what_to_install(monkeypatch):
    monkeypatch.setenv("LORARUN_TEST_CHROMIUM", "/nonexistent/chromium")
    with pytest.warns(UserWarning, match="BROWSER TESTS SKIPPED"), pytest.raises(pytest.skip.Exception) as skipped:
        require_browser()
    assert "apt-get install -y chromium" in str(skipped.value) and ".ci/run" in str(skipped.value)
