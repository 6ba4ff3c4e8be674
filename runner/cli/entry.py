"""The `lorarun` console script. `lorarun --version` is answered here, before typer and rich are imported (they are
most of a bare start's CPU: bench/cli_startup.py); every other command line goes to the typer app (`app.py`)."""

from __future__ import annotations

import sys

from lorarun.runner.cli.version import version_text


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        print(version_text())
        return 0
    from lorarun.runner.cli.app import main as app_main

    return app_main(args)
