"""`lorarun config set/get/list/unset/show/key`: the user's defaults that every job inherits unless it says otherwise
(provider, gpus, gpu_count, max_price_per_hour, max_cost, image) and the providers' API keys, one file for both.
The rules are in `runner/job/user_config.py` and `runner/job/config_show.py`; the file itself (path, mode 0600,
migration from `~/.lorarun/config.toml`) in `provider_adapters/user_files.py` and `config_file.py`."""

from __future__ import annotations

import typer

from lorarun.runner.console import console
from lorarun.runner.job import user_config

config_app = typer.Typer(
    help="Your defaults for every job (provider, GPUs, price and cost limits, image) and your API keys.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


def _show(value) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


@config_app.command("set", help="Set a default, e.g. `lorarun config set provider vastai`.")
def set_(
    key: str = typer.Argument(..., help=f"One of: {', '.join(user_config.KEYS)}."),
    value: str = typer.Argument(..., help="The value (gpus: comma-separated names)."),
) -> None:
    name = user_config.canonical(key)
    parsed = user_config.set_value(name, value)
    console.print(f"{name} = {_show(parsed)}  [dim]({user_config.config_path()})[/]", highlight=False)


@config_app.command("get", help="Print one default (nothing, exit 1, when it is not set).")
def get(key: str = typer.Argument(...)) -> None:
    name = user_config.canonical(key)
    settings = user_config.load()
    if name not in settings:
        raise typer.Exit(1)
    console.print(_show(settings[name]), highlight=False)


@config_app.command("list", help="Print every default and where the file is.")
def list_() -> None:
    settings = user_config.load()
    console.print(f"[dim]{user_config.config_path()}[/]", highlight=False)
    for name, key in user_config.KEYS.items():
        shown = _show(settings[name]) if name in settings else "[dim](not set)[/]"
        console.print(f"{name:<20} {shown}  [dim]# {key.help}[/]", highlight=False)


@config_app.command("unset", help="Remove a default (jobs then use their own value or lorarun's).")
def unset(key: str = typer.Argument(...)) -> None:
    name = user_config.canonical(key)
    removed = user_config.unset_value(name)
    console.print(f"{name} {'unset' if removed else 'was not set'}", highlight=False)


@config_app.command("show", help="Every default that is set and where each provider's API key comes from (masked).")
def show() -> None:
    from lorarun.runner.job.config_show import config_report

    for line in config_report():
        console.print(line, highlight=False)


@config_app.command("key", help="Save a provider's API key in the config file (mode 0600); read hidden or from stdin.")
def key(provider: str = typer.Argument(..., help="vastai or runpod.")) -> None:
    import sys

    from lorarun.runner.job.config_show import save_api_key

    if sys.stdin.isatty():
        secret = typer.prompt(f"{provider} API key", hide_input=True, default="", show_default=False)
    else:
        secret = sys.stdin.readline()
    console.print(save_api_key(provider, secret), highlight=False)
