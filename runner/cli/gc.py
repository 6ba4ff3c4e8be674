"""`lorarun gc [--yes]`: find every `lorarun-*` instance on every configured provider, mark the ones no local
job owns or whose lease has expired, and destroy them when confirmed. The safety net for a laptop that died.
The sweep itself is the controller's (runner/run/orphans.py); this command shows what it found and asks."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from lorarun.runner.console import console, err_console, money
from lorarun.runner.errors import UserInputError
from lorarun.runner.state import JobStore

if TYPE_CHECKING:
    from lorarun.runner.run.orphans import Finding

# The sweep (provider clients, teardown) is imported where gc uses it: `lorarun --help` imports this module.


def register(app: typer.Typer) -> None:
    app.command("gc", help="Find lorarun instances nothing owns any more, and destroy them.")(gc)


def gc(
    yes: bool = typer.Option(False, "--yes", "-y", help="Destroy without asking."),
    provider: list[str] = typer.Option(None, "--provider", "-p", help="Only these providers."),
) -> None:
    from lorarun.runner.run.orphans import survey

    store = JobStore()
    seen = survey(store, provider)
    err_console.print(seen.coverage_line(), highlight=False, markup=False)
    if not seen.findings:
        console.print(f"no lorarun instances found on {', '.join(seen.searched) or 'any provider'}", highlight=False)
    else:
        _destroy_orphans(list(seen.findings), store, yes)
    seen.raise_if_unseen()


def _destroy_orphans(findings: list[Finding], store: JobStore, yes: bool) -> None:
    from rich.table import Table

    from lorarun.runner.run.orphans import CONTROLLER_GONE, destroy_orphans

    table = Table(title="lorarun instances", title_justify="left")
    for column in ("provider", "instance", "label", "status", "$/h", "job", "verdict"):
        table.add_column(column)
    for f in findings:
        table.add_row(
            f.provider.name,
            f.instance.id,
            f.instance.label,
            f.instance.status.value,
            money(f.instance.price_per_hour),
            f.job.job_id if f.job else "-",
            f"[red]{f.verdict}[/]" if f.orphan else "[green]live job[/]",
        )
    console.print(table)
    for f in findings:
        if f.job is not None and f.verdict == CONTROLLER_GONE:
            console.print(
                f"job {f.job.job_id}'s controller is gone; gc stops it and pulls what exists before "
                f"destroying it (as `lorarun down`); `lorarun attach {f.job.job_id}` would resume it "
                f"instead",
                highlight=False,
            )
    orphans = [f for f in findings if f.orphan]
    if not orphans:
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UserInputError(f"{len(orphans)} instance(s) to destroy; pass --yes to confirm without a prompt")
        from rich.prompt import Confirm

        if not Confirm.ask(f"Destroy {len(orphans)} instance(s)?", default=False, console=err_console):
            return
    destroy_orphans(orphans, store)
