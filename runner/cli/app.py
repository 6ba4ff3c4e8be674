"""The `lorarun` command. Thin on purpose: each command lives in `runner/cli/<name>.py` and registers
itself; errors become short lines and an exit code through `errors.error_lines`."""

from __future__ import annotations

import importlib
import sys
from typing import Protocol, cast

import typer
from rich.text import Text
from typer.core import TyperGroup

from lorarun.runner.cli.version import version_text
from lorarun.runner.console import err_console
from lorarun.runner.errors import error_lines

COMMANDS = (
    "validate",
    "estimate",
    "submit",
    "status",
    "attach",
    "logs",
    "down",
    "pull",
    "gc",
    "image",
    "config",
    "publish",
    "caption",
    "ui",
    "batch",
)


class _RootGroup(TyperGroup):
    """`lorarun --help` (and `lorarun` alone) in click's plain layout. Typer's rich layout imports rich.markdown and
    markdown-it, about half of a bare start's CPU (bench/cli_startup.py); each command's own --help keeps it."""

    def format_help(self, ctx, formatter) -> None:
        return super(TyperGroup, self).format_help(ctx, formatter)


app = typer.Typer(
    name="lorarun",
    cls=_RootGroup,
    help="Rent a GPU, train a LoRA, bring it home, stop the billing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Options common to every command (`--debug` is read in `main`, before typer runs)."""


def _register_commands() -> None:
    if app.registered_commands or app.registered_groups:
        return  # once per process: registering again would add every command again (and slow each call)
    from lorarun.runner.cli.help_text import use_plain_type_labels

    use_plain_type_labels()
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"lorarun.runner.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"lorarun.runner.cli.{name}":
                continue  # a command that does not exist yet is simply absent, never a stub
            raise
        module.register(app)


def main(argv: list[str] | None = None) -> int:
    _register_commands()
    args = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in args
    if debug and "--" not in args[: args.index("--debug")]:
        # accepted anywhere (`lorarun validate job.toml --debug` too), not only before the command
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        result = app(args=args, standalone_mode=False)
        if isinstance(result, int) and result:  # click returns typer.Exit's code in non-standalone mode
            return result
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # click's own usage errors exit 2 with a message already printed
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        usage_errors, aborts = _click_exception_types()
        if type(exc).__name__ == "NoArgsIsHelpError":
            # `lorarun` alone (or a group alone: `lorarun config`): the help, on stdout, nothing went wrong. The
            # plain layout carries it in the exception; the rich one has printed it already (the message is "").
            if help_text := cast(_ClickError, exc).format_message():
                typer.echo(help_text)
            return 0
        if isinstance(exc, aborts):
            exc = KeyboardInterrupt()
        if isinstance(exc, usage_errors):
            usage = cast(_ClickError, exc)  # one of click's (or typer's vendored click's) classes, found at run time
            usage.show()  # click's own "Usage: … Error: …" lines
            return usage.exit_code
        code, lines = error_lines(exc)
        for line in lines:
            # Text, not markup: messages carry brackets of their own ("[vastai] api_key").
            text = (
                Text.assemble(("error:", "bold red"), line[len("error:") :])
                if line.startswith("error:")
                else Text(line)
            )
            err_console.print(text, highlight=False, soft_wrap=True)
        if debug:
            import traceback

            traceback.print_exception(exc)
        return code
    return 0


class _ClickError(Protocol):
    """What lorarun uses of click's exceptions (imported by name at run time: `_click_exception_types`)."""

    exit_code: int

    def show(self) -> None: ...
    def format_message(self) -> str: ...


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Usage errors and aborts from click, or from the copy of click that newer typer releases vendor."""
    usage: list[type] = []
    aborts: list[type] = [typer.Abort]
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        usage.append(mod.ClickException)
        if hasattr(mod, "Abort"):
            aborts.append(mod.Abort)
    return tuple(usage), tuple(aborts)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
