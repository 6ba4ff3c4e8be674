"""`lorarun pull JOB`: bring home what a job's instance has made so far, without attaching to the job.

For a job nobody follows (detached with Ctrl-C, or its `lorarun` died): the outputs the manifest lists that are not
on this laptop with the same sha256 come home, each checked against its sha256 after the copy, and the engine's
events catch up in the job's local `events.jsonl`. Nothing else changes: the lease is not renewed, the heartbeat
not touched (the agent's grace window and self-destroy stay exactly as they were), the instance is not destroyed.

The controller lock is held for the few seconds it takes (runner/state.py), so a pull never races a controller;
when a live controller drives the job it already pulls each output as it appears, and the pull says so instead.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from lorarun.provider_adapters.base import Instance, InstanceStatus, Provider
from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run.connect import connect_transport, provider_for_state
from lorarun.runner.run.monitor import JobMonitor, local_output_path
from lorarun.runner.state import JobStore


@dataclass(frozen=True)
class PullOutcome:
    message: str
    pulled: tuple[str, ...] = ()
    already_home: int = 0
    problems: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class _Link:
    """What `connect_transport` needs of a rental: the adapter and the instance."""

    provider: Provider
    instance: Instance


def pull_outputs_now(store: JobStore, job_id: str, progress=None) -> PullOutcome:
    state = store.load(job_id)
    holder = store.lock_holder(state.job_id)
    if holder is not None and holder.pid and holder.alive() and holder.pid != os.getpid():
        return PullOutcome(
            f"job {state.job_id} is driven by {holder.describe()}, which brings each output home as it appears"
        )
    if not state.instance_id or state.instance_destroyed:
        return PullOutcome(f"job {state.job_id} has no instance left; its outputs are in {state.output_dir}")
    if not state.remote_dir:
        return PullOutcome(f"job {state.job_id} never started on its instance ({state.phase}); nothing to pull")
    with store.holding([state.job_id], "pull"):
        provider = provider_for_state(state)
        instance = provider.get(state.instance_id)
        if instance is None or instance.status == InstanceStatus.TERMINATED:
            return PullOutcome(
                f"instance {state.instance_id} is gone at {provider.name}; outputs home are in {state.output_dir}"
            )
        transport = connect_transport(_Link(provider, instance), state, store.job_dir(state.job_id))
        try:
            layout = RemoteLayout.resolve(transport, state.job_id)
            out = Path(state.output_dir)
            monitor = JobMonitor(transport, layout, out, store.job_dir(state.job_id) / "events.jsonl")
            monitor.read_new_events()
            home = 0
            for entry in monitor.manifest():
                rel, sha = str(entry.get("path", "")), str(entry.get("sha256", ""))
                local = local_output_path(out, rel)
                if local is not None and local.is_file() and _sha256(local) == sha:
                    monitor.progress.pulled[rel] = sha  # home already, unchanged: not copied again
                    home += 1
            expected = {str(e.get("path", "")): str(e.get("sha256", "")) for e in monitor.manifest()}
            pulled = monitor.pull_outputs(progress)
        finally:
            transport.close()
    problems = [f"{rel}: {why}" for rel, why in monitor.progress.local_errors.items()]
    problems += [f"{rel}: refused (it would land outside {out})" for rel in monitor.progress.refused]
    for rel in pulled:
        local = local_output_path(out, rel)
        if local is None or _sha256(local) != expected.get(rel):
            problems.append(f"{rel}: sha256 differs from the instance's manifest after the copy; pull again")
    text = f"pulled {len(pulled)} file(s) into {out}, {home} already home"
    return PullOutcome(text, tuple(pulled), home, tuple(problems))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
