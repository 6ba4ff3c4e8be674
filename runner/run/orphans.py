"""The orphan sweep behind `lorarun gc`: every `lorarun-*` instance on every configured provider, judged against
this laptop's jobs (no job owns it, its job is over, its lease expired, its controller is gone), and the destroying
of the ones judged orphans. The safety net for a laptop that died; the CLI (runner/cli/gc.py) shows the findings
and asks before anything is destroyed."""

from __future__ import annotations

import time
from dataclasses import dataclass

from lorarun.provider_adapters.base import LABEL_PREFIX, Instance, Provider
from lorarun.provider_adapters.errors import CredentialsMissing, ProviderError
from lorarun.runner.console import err_console
from lorarun.runner.errors import ProvidersUnseen, exit_code_and_message
from lorarun.runner.job.spec import Resources
from lorarun.runner.run.connect import make_provider
from lorarun.runner.run.teardown import destroy_and_confirm, report
from lorarun.runner.state import JobState, JobStore, controller_alive

DEFAULT_PROVIDERS = ("local", "vastai", "runpod")
CONTROLLER_GONE = "controller gone"


@dataclass(frozen=True)
class Finding:
    provider: Provider
    instance: Instance
    job: JobState | None
    verdict: str  # why it should go, or "" when a live job owns it

    @property
    def orphan(self) -> bool:
        return bool(self.verdict)


@dataclass(frozen=True)
class Survey:
    """What gc saw: each instance found with its verdict, and which providers it could search."""

    findings: tuple[Finding, ...]
    searched: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (provider, why) default providers left out for want of a key
    unseen: tuple[str, ...]  # one line per provider that could not be listed

    def coverage_line(self) -> str:
        """Which providers gc looked at, and which it could not (no false "nothing found")."""
        parts = [f"looked at {', '.join(self.searched) or 'no provider'}"]
        parts += [f"skipped {name} ({why})" for name, why in self.skipped]
        parts += [f"could not see {line}" for line in self.unseen]
        return "gc: " + "; ".join(parts)

    def raise_if_unseen(self) -> None:
        """Exit non-zero when a provider could not be listed (1), or when no rented provider could be searched at
        all for want of a key (2): an instance there would still be billing, unseen."""
        if self.unseen:
            raise ProvidersUnseen([f"{line}; run gc again when it answers" for line in self.unseen], exit_code=1)
        if self.skipped and not set(self.searched) - {"local"}:
            raise ProvidersUnseen(
                [
                    "gc could search no rented provider: "
                    + ", ".join(f"{name} ({why})" for name, why in self.skipped)
                    + "; export VAST_API_KEY or RUNPOD_API_KEY (README: Providers and credentials); "
                    "`lorarun gc -p vastai` lists every place lorarun looks for its key"
                ],
                exit_code=2,
            )


def survey(store: JobStore, names: list[str] | None = None) -> Survey:
    """List every lorarun instance on the providers `names` (default: all of them that have a key) and judge each
    one. RunPod's registry credentials whose pod is gone are deleted on the way (they cost nothing, but pile up)."""
    jobs = {s.job_id: s for s in store.all()}
    adapters, skipped = configured_providers(names)
    findings: list[Finding] = []
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
    return Survey(tuple(findings), tuple(searched), tuple(skipped), tuple(unseen))


def classify(provider: Provider, instance: Instance, jobs: dict[str, JobState], now: float | None = None) -> Finding:
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
        return Finding(provider, instance, job, CONTROLLER_GONE)
    return Finding(provider, instance, job, "")


def destroy_orphans(orphans: list[Finding], store: JobStore) -> None:
    """Destroy each orphan and confirm it gone. A job this laptop knows whose controller is gone is stopped first,
    as `lorarun down` does, so its outputs come home before its instance goes."""
    for f in orphans:
        if f.job is not None and f.verdict == CONTROLLER_GONE and _down_first(f.job):
            continue  # stopped, pulled and destroyed (confirmed or said loudly) like `lorarun down`
        result = destroy_and_confirm(f.provider, f.instance.id)
        report(result)
        if f.job is not None:
            store.update(f.job, instance_destroyed=result.confirmed)


def _down_first(job: JobState) -> bool:
    """Bring the job's outputs home before its instance goes (no LoRA lost to a cleanup). False when that could not
    be done; the caller then destroys the instance directly."""
    from lorarun.runner.run.reattach import reattach  # the pipeline: loaded only when a job is to be stopped

    try:
        reattach(job.job_id, stop=True)
        return True
    except Exception as exc:
        err_console.print(
            f"[yellow]job {job.job_id}: could not pull its outputs first ({exc}); destroying[/]", highlight=False
        )
        return False


def configured_providers(names: list[str] | None) -> tuple[list[Provider], list[tuple[str, str]]]:
    """The adapters to search, and (name, why) for each default provider skipped for want of a key."""
    adapters: list[Provider] = []
    skipped: list[tuple[str, str]] = []
    for name in names or DEFAULT_PROVIDERS:
        try:
            adapters.append(make_provider(Resources(provider=name)))
        except CredentialsMissing:
            if names:  # asked for by name: say why it is missing
                raise
            skipped.append((name, "no API key"))
    return adapters, skipped
