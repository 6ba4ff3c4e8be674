"""`lorarun gc [--yes]`: find every `lorarun-*` instance on every configured provider, mark the ones no local
job owns or whose lease has expired, and destroy them when confirmed. The safety net for a laptop that died."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from lorarun.provider_adapters.errors import CredentialsMissing, ProviderError
from lorarun.runner.console import console, err_console, money
from lorarun.runner.errors import ProvidersUnseen, UserInputError, exit_code_and_message
from lorarun.runner.state import JobState, JobStore, controller_alive

if TYPE_CHECKING:
    from lorarun.provider_adapters.base import Instance, Provider

# The provider clients and teardown are imported where gc uses them: `lorarun --help` imports this module.


@dataclass(frozen=True)
class Finding:
    provider: Provider
    instance: Instance
    job: JobState | None
    verdict: str  # why it should go, or "" when a live job owns it

    @property
    def orphan(self) -> bool:
        return bool(self.verdict)


def register(app: typer.Typer) -> None:
    app.command("gc", help="Find lorarun instances nothing owns any more, and destroy them.")(gc)


def gc(
    yes: bool = typer.Option(False, "--yes", "-y", help="Destroy without asking."),
    provider: list[str] = typer.Option(None, "--provider", "-p", help="Only these providers."),
) -> None:
    store = JobStore()
    jobs = {s.job_id: s for s in store.all()}
    findings: list[Finding] = []
    adapters, skipped = _configured_providers(provider)
    searched: list[str] = []
    unseen: list[str] = []
    for adapter in adapters:
        try:
            owned = adapter.list_owned()
        except ProviderError as exc:
            unseen.append(f"{adapter.name}: could not list its instances ({exit_code_and_message(exc)[1]})")
            continue
        searched.append(adapter.name)
        findings += [classify(adapter, instance, jobs) for instance in owned]
        sweep = getattr(adapter, "sweep_credentials", None)  # RunPod: registry credentials whose pod is gone
        if sweep is not None:
            try:
                for name in sweep():
                    err_console.print(f"deleted registry credential {name} (its pod is gone)", highlight=False)
            except ProviderError as exc:
                err_console.print(f"could not sweep {adapter.name} registry credentials: {exc}", highlight=False)
    seen = coverage_line(searched, skipped, unseen)
    err_console.print(seen, highlight=False, markup=False)
    if not findings:
        console.print(f"no lorarun instances found on {', '.join(searched) or 'any provider'}", highlight=False)
    else:
        _destroy_orphans(findings, store, yes)
    raise_if_unseen(searched, skipped, unseen)


def coverage_line(searched: list[str], skipped: list[tuple[str, str]], unseen: list[str]) -> str:
    """Which providers gc looked at, and which it could not (no false "nothing found")."""
    parts = [f"looked at {', '.join(searched) or 'no provider'}"]
    parts += [f"skipped {name} ({why})" for name, why in skipped]
    parts += [f"could not see {line}" for line in unseen]
    return "gc: " + "; ".join(parts)


def raise_if_unseen(searched: list[str], skipped: list[tuple[str, str]], unseen: list[str]) -> None:
    """Exit non-zero when a provider could not be listed (1), or when no rented provider could be searched at
    all for want of a key (2): an instance there would still be billing, unseen."""
    if unseen:
        raise ProvidersUnseen([f"{line}; run gc again when it answers" for line in unseen], exit_code=1)
    if skipped and not set(searched) - {"local"}:
        raise ProvidersUnseen(
            [
                "gc could search no rented provider: "
                + ", ".join(f"{name} ({why})" for name, why in skipped)
                + "; export VAST_API_KEY or RUNPOD_API_KEY (README: Providers and credentials); "
                "`lorarun gc -p vastai` lists every place lorarun looks for its key"
            ],
            exit_code=2,
        )


def _destroy_orphans(findings: list[Finding], store: JobStore, yes: bool) -> None:
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
        if f.verdict == "controller gone":
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
    from lorarun.runner.run.teardown import destroy_and_confirm, report

    for f in orphans:
        if f.job is not None and f.verdict == "controller gone" and _down_first(f.job):
            continue  # stopped, pulled and destroyed (confirmed or said loudly) like `lorarun down`
        result = destroy_and_confirm(f.provider, f.instance.id)
        report(result)
        if f.job is not None:
            store.update(f.job, instance_destroyed=result.confirmed)


def _down_first(job: JobState) -> bool:
    """A job this laptop knows: bring its outputs home before its instance goes (no LoRA lost to a cleanup).
    False when that could not be done; the caller then destroys the instance directly."""
    from lorarun.runner.cli.attach import _resume

    try:
        _resume(job.job_id, stop=True)
        return True
    except Exception as exc:
        err_console.print(
            f"[yellow]job {job.job_id}: could not pull its outputs first ({exc}); destroying[/]", highlight=False
        )
        return False


def classify(provider: Provider, instance: Instance, jobs: dict[str, JobState], now: float | None = None) -> Finding:
    from lorarun.provider_adapters.base import LABEL_PREFIX

    now = time.time() if now is None else now
    job_id = instance.label.removeprefix(LABEL_PREFIX)
    job = jobs.get(job_id)
    if job is None:
        return Finding(provider, instance, None, "no local job owns it")
    if job.is_final and job.phase != "kept":
        return Finding(provider, instance, job, f"its job is {job.phase}")
    if job.lease_deadline is not None and now > job.lease_deadline:
        return Finding(provider, instance, job, "lease expired")
    if not controller_alive(job):
        return Finding(provider, instance, job, "controller gone")
    return Finding(provider, instance, job, "")


def _configured_providers(names: list[str] | None) -> tuple[list[Provider], list[tuple[str, str]]]:
    """The adapters to search, and (name, why) for each default provider skipped for want of a key."""
    from lorarun.runner.job.spec import Resources
    from lorarun.runner.run.connect import make_provider

    wanted = names or ["local", "vastai", "runpod"]
    adapters: list[Provider] = []
    skipped: list[tuple[str, str]] = []
    for name in wanted:
        try:
            adapters.append(make_provider(Resources(provider=name)))
        except CredentialsMissing:
            if names:  # asked for by name: say why it is missing
                raise
            skipped.append((name, "no API key"))
    return adapters, skipped
