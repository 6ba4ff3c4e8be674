"""`lorarun --version`'s line, read from the installed package's metadata. Its own module so that both the console
script (`entry.py`, which answers --version before typer loads) and the typer app (`app.py`) use it without
importing each other."""

from __future__ import annotations


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"lorarun {version('lorarun')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "lorarun (not installed: version unknown)"
