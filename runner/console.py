"""The two rich consoles: results on stdout, progress and messages on stderr (so `--json` stays clean)."""
from __future__ import annotations

from rich.console import Console

console = Console(soft_wrap=True)  # long paths must stay copy-pastable, never wrapped
err_console = Console(stderr=True, soft_wrap=True)


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
