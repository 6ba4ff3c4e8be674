"""Which provider a job goes to when neither the command line, the job file nor the user's config says: `submit`
asks under a terminal, and otherwise stops with one line saying how to choose. Nothing is ever assumed: a job that
silently trained on the laptop (or silently rented) is the surprise this exists to prevent."""

from __future__ import annotations

from lorarun.runner.errors import UserInputError
from lorarun.runner.job.spec import PROVIDERS


def how_to_choose(what: str) -> str:
    return (
        f"{what}: no provider chosen; pass --provider vastai (or runpod, ssh, local), set it in the job "
        f"(resources.provider, or [lorarun] provider in a kohya TOML), or for every job: "
        f"lorarun config set provider vastai"
    )


def ask_provider(what: str, *, interactive: bool) -> str:
    if not interactive:
        raise UserInputError(how_to_choose(what))
    from rich.prompt import Prompt

    from lorarun.runner.console import err_console

    err_console.print(
        f"{what} does not say where to run (local = this machine, ssh = a host you own, "
        f"vastai / runpod = a rented GPU).",
        highlight=False,
    )
    choice = Prompt.ask("Provider", choices=list(PROVIDERS), console=err_console)
    err_console.print(f"[dim]to make it the default: lorarun config set provider {choice}[/]", highlight=False)
    return choice
