"""The two rich consoles: results on stdout, progress and messages on stderr (so `--json` stays clean)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

# Output that goes to a file or a pipe has no width: rich would assume 80 columns and cut tables ("tra…", ids broken
# over two lines). There, tables get the room they need (COLUMNS still wins when set).
PIPE_WIDTH = 200


def _width(stream) -> int | None:
    if os.environ.get("COLUMNS") or (hasattr(stream, "isatty") and stream.isatty()):
        return None  # rich reads the terminal (or COLUMNS) itself
    return PIPE_WIDTH


console = Console(soft_wrap=True, width=_width(sys.stdout))  # long paths must stay copy-pastable, never wrapped
err_console = Console(stderr=True, soft_wrap=True, width=_width(sys.stderr))


_views = threading.local()


def views_hidden() -> bool:
    """True in a thread whose progress bars are hidden (a batch's rental: the batch shows one table instead)."""
    return getattr(_views, "hidden", False)


@contextmanager
def hidden_views() -> Iterator[None]:
    _views.hidden = True
    try:
        yield
    finally:
        _views.hidden = False


def money(dollars: float | None) -> str:
    if dollars is None:
        return "-"
    return f"${dollars:,.2f}" if dollars >= 0.995 else f"${dollars:.3f}"


def minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
