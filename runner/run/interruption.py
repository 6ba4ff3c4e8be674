"""Interrupted rentals: notice the provider took the machine back, and carry the job on from another one.

What an interruption looks like (the adapters map them to `InstanceStatus`):
- Vast.ai outbid: the instance is "stopped (not destroyed) and storage keeps billing" (vast-ai/docs
  `faq/rental-types.mdx`); dstack reads it as cur_state, intended_status and next_state "stopped"
  (dstackai/dstack `backends/vastai/compute.py::update_provisioning_data`; providers.md §1.4, §1.8).
- RunPod spot: the pod is stopped "with only a 5-second warning" (RunPod's removed spot docs, providers.md §2.8):
  EXITED, or gone from the API.
- SSH dead while the provider says the machine is not running.
Our own crash is the other case: the provider says RUNNING, the engine reported `failed` or the agent died.

Detection: the monitor asks the provider every `CHECK_INTERVAL_S` on an interruptible rental (and at once when the
SSH link drops), so an interruption is noticed within a minute. Vast's show-instance limit is one call per 2 s
(`x-rate-limit` 2.0, vast-ai/docs `show_instance.yaml`), its docs poll every 10 s: 15 s stays clear of both.

Resume: destroy the interrupted instance and confirm it (a stopped Vast instance still bills storage), exclude its
offer and machine, rent the next offer by the same ranking, and run the job again: the upload skips nothing on a
new machine, `resume_state.push` puts back the state, the events and the last checkpoint, and the engine goes on
from that step with the same seed plan. Limits: `resources.max_interruptions` re-rents, and `max_cost` over the
spend of every rental together.

The pipeline calls in here from small hooks: `run_jobs` (pipeline.py, instead of `_run_jobs`), `before_agent`
(pipeline.py, between upload and agent start), and in training.py `check` (`check_instance_alive`),
`check_interval` (the monitor's cadence) and `after_round`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from lorarun.provider_adapters.base import Instance, InstanceStatus
from lorarun.provider_adapters.errors import ProviderError
from lorarun.runner.console import err_console, money
from lorarun.runner.errors import PipelineError
from lorarun.runner.price import interruptible
from lorarun.runner.price.budget import DEFAULT_STOP_RESERVE_S, SpendTracker
from lorarun.runner.run import boot, resume_state
from lorarun.runner.run.teardown import destroy_and_confirm, report

if TYPE_CHECKING:
    from collections.abc import Callable

    from lorarun.runner.remote.layout import RemoteLayout
    from lorarun.runner.run.context import JobRun, RunContext
    from lorarun.runner.run.monitor import JobMonitor
    from lorarun.sshlink.transport import Transport

CHECK_INTERVAL_S = 15.0  # provider checks on an interruptible rental (on-demand: the monitor's own 30 s)
DETECT_WITHIN_S = 60.0  # the promise: an interruption is noticed within this long
LOG_FILE = "interruptions.json"


@dataclass(frozen=True)
class Interruption:
    instance_id: str
    provider: str
    machine: str
    reason: str
    seen_at: float  # the pipeline clock's wall time when lorarun noticed it
    step: int  # the step of the newest resume state home: where the job goes on from
    rented_seconds: float


class InstanceInterrupted(PipelineError):
    """The provider took an interruptible machine back; `run_jobs` resumes the job elsewhere."""

    def __init__(self, instance_id: str, reason: str):
        super().__init__(f"instance {instance_id} was interrupted by its provider ({reason})")
        self.instance_id = instance_id
        self.reason = reason


class ResumeOverBudget(PipelineError):
    """Resuming on another rental would take the job's spend over max_cost: it stops with its checkpoints home."""


@dataclass
class CarriedSpend(SpendTracker):
    """Spend across rentals: what earlier (interrupted) rentals cost, plus this one's running total."""

    carried: float = 0.0

    def spent(self) -> float:
        return self.carried + super().spent()


def is_interruptible(pipeline: RunContext) -> bool:
    return bool(pipeline.rental.offer.interruptible)


def check_interval(pipeline: RunContext, default: float = 30.0) -> float:
    return CHECK_INTERVAL_S if is_interruptible(pipeline) else default


def interruption_reason(instance: Instance | None) -> str | None:
    """Why the provider's answer means the machine was taken back, or None while it still runs."""
    if instance is None or instance.status is InstanceStatus.TERMINATED:
        return "gone at the provider"
    if instance.status is InstanceStatus.STOPPED:
        return instance.status_message or "stopped by the provider"
    return None


def check(pipeline: RunContext, instance: Instance | None) -> None:
    """Hook in `_check_instance_alive`: on an interruptible rental a stopped or vanished instance is an
    interruption (resumed elsewhere), not a failure."""
    if not is_interruptible(pipeline) or pipeline.rental.instance is None:
        return
    reason = interruption_reason(instance)
    if reason is not None:
        raise InstanceInterrupted(pipeline.rental.instance.id, reason)


def after_round(pipeline: RunContext, run: JobRun, monitor: JobMonitor) -> None:
    """Hook after each monitor round: keep the newest resume state home (interruptible rentals only)."""
    if not is_interruptible(pipeline):
        return
    from lorarun.sshlink.errors import ConnectionLost

    try:
        step = resume_state.pull_newest(monitor.transport, monitor.layout, pipeline.store.job_dir(run.state.job_id))
    except ConnectionLost:
        return  # the next round (or the interruption check) deals with the link
    if step is not None:
        err_console.print(f"resume state of step {step} is home", style="dim", highlight=False)


def before_agent(pipeline: RunContext, run: JobRun, transport: Transport, layout: RemoteLayout) -> None:
    """Hook between upload and agent start: a job resumed on a new rental gets its state back."""
    step = resume_state.push(transport, layout, pipeline.store.job_dir(run.state.job_id), run.job.spec.output_dir)
    if step is not None:
        err_console.print(f"resuming from step {step} (its state and checkpoint were home)", highlight=False)


def run_jobs(pipeline: RunContext, run_once: Callable[[], None]) -> None:
    """`run_once` (the pipeline's `_run_jobs`), resumed on a new rental after each interruption (up to
    `max_interruptions`). Passed in, so this module needs only the run's context and never imports the pipeline."""
    from lorarun.sshlink.errors import ConnectionLost

    while True:
        try:
            run_once()
            _record_uninterrupted(pipeline)
            return
        except InstanceInterrupted as exc:
            interrupted = exc
        except (ConnectionLost, PipelineError) as exc:
            # The link died during an upload or a pull: the provider says whether the machine was taken back.
            if not is_interruptible(pipeline) or isinstance(exc, ResumeOverBudget):
                raise
            try:
                reason = interruption_reason(pipeline.provider.get(pipeline.rental.live.id))
            except ProviderError:
                reason = None
            if reason is None:
                raise
            interrupted = InstanceInterrupted(pipeline.rental.live.id, reason)
        re_rent(pipeline, interrupted)


def re_rent(pipeline: RunContext, exc: InstanceInterrupted) -> None:
    """Destroy and confirm the interrupted instance, then rent the next offer and wait for it."""
    instance = pipeline.rental.live
    offer = pipeline.rental.offer
    run = next((r for r in pipeline.runs if r.outcome is None), pipeline.primary)
    job_dir = pipeline.store.job_dir(run.state.job_id)
    rented = (pipeline.clock.wall() - pipeline.rental.started_at) if pipeline.rental.started_at else 0.0
    event = Interruption(
        instance_id=instance.id,
        provider=pipeline.provider.name,
        machine=instance.machine or offer.machine,
        reason=exc.reason,
        seen_at=pipeline.clock.wall(),
        step=_last_step(job_dir),
        rented_seconds=round(rented, 1),
    )
    log = _append(job_dir, event)
    err_console.print(
        f"[yellow]{pipeline.provider.name} took instance {instance.id} back ({exc.reason}) at step {event.step}[/]; "
        f"destroying it, then resuming on another machine from the last checkpoint home",
        highlight=False,
    )
    if pipeline.rental.transport is not None:
        try:
            pipeline.rental.transport.close()
        except Exception:
            pass
        pipeline.rental.transport = None
    result = destroy_and_confirm(pipeline.provider, instance.id, clock=pipeline.clock)
    report(result)
    spent = pipeline.spent()  # every rental so far, this one up to its confirmed destroy
    try:
        interruptible.record_rental(pipeline.provider.name, rented / 3600.0, interrupted=True)
    except OSError:
        pass  # the learned rate is a nicety; the job goes on
    if not result.confirmed:
        raise exc  # the teardown tries again and prints the kill command; renting more would hide it
    pipeline.rental.instance = None
    pipeline.held_for_pull = None  # a pull the interruption cut: the next rental writes those outputs again
    limit = run.job.spec.resources.max_interruptions
    if len(log) > limit:
        raise PipelineError(
            f"interrupted {len(log)} times (resources.max_interruptions is {limit}); the checkpoints so far are in "
            f"{run.job.spec.output_dir}"
        )
    _refuse_over_budget(pipeline, spent)
    if offer.provider != "runpod":  # a RunPod offer is a GPU type in a cloud, not a machine: it stays rentable
        pipeline.ranked = [
            e
            for e in pipeline.ranked
            if e.offer.id != offer.id and not (event.machine and e.offer.machine == event.machine)
        ]
    if not any(e.fits for e in pipeline.ranked):
        raise PipelineError(
            f"no other offer left to resume on after the interruption; the checkpoints so far are in "
            f"{run.job.spec.output_dir}"
        )
    _provision_again(pipeline)
    tracker = pipeline.spend
    if tracker is not None:
        pipeline.spend = CarriedSpend(
            price_per_hour=tracker.price_per_hour,
            started_at=tracker.started_at,
            clock=tracker.clock,
            storage_per_hour=tracker.storage_per_hour,
            carried=spent,
        )


def _record_uninterrupted(pipeline: RunContext) -> None:
    """The last interruptible rental ran to the end: its hours teach the rate too (runner/price/interruptible.py)."""
    if not is_interruptible(pipeline) or pipeline.rental.started_at is None:
        return
    try:
        hours = (pipeline.clock.wall() - pipeline.rental.started_at) / 3600.0
        interruptible.record_rental(pipeline.provider.name, hours, interrupted=False)
    except OSError:
        pass


def _provision_again(pipeline: RunContext) -> None:
    from lorarun.runner.run import provision, wait  # they import the phase modules that import this one

    while True:  # as Pipeline.run: a failed start is destroyed and the next offer rented
        if pipeline.rental.instance is None:
            provision.provision(pipeline)
        try:
            if pipeline.rental.transport is None:
                wait.wait_ready(pipeline)
            return
        except boot.StartFailed as failed:
            if not boot.fall_back_after(pipeline, failed):
                raise


def _refuse_over_budget(pipeline: RunContext, spent: float) -> None:
    """Before renting again: what was spent plus the cheapest remaining offer's cost must stay under max_cost."""
    if pipeline.max_cost is None or not pipeline.ranked:
        return
    best = next((e for e in pipeline.ranked if e.fits), None)
    if best is None:
        return
    run = pipeline.primary
    total = max(1, run.job.total_steps)
    done = _last_step(pipeline.store.job_dir(run.state.job_id))
    p = best.phases
    fixed = p.startup + p.transfer + p.prepare + p.sampling
    # plus the reserve a running job keeps for its last pull and teardown (SpendTracker.over)
    again = (
        best.offer.price_per_hour * (fixed + p.train * (1 - min(done, total) / total) + DEFAULT_STOP_RESERVE_S) / 3600.0
    )
    if spent + again > pipeline.max_cost:
        raise ResumeOverBudget(
            f"budget: {money(spent)} spent on the interrupted rental(s); resuming would cost about {money(again)} "
            f"more, over max_cost {money(pipeline.max_cost)}. The checkpoints so far are in "
            f"{run.job.spec.output_dir}"
        )


def _last_step(job_dir) -> int:
    found = resume_state.home_state(job_dir)
    return int(found[1].get("global_step") or 0) if found else 0


def _append(job_dir, event: Interruption) -> list[dict]:
    path = job_dir / LOG_FILE
    try:
        log = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log = []
    log.append(asdict(event))
    path.write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    return log


def read_log(job_dir) -> list[dict]:
    try:
        return list(json.loads((job_dir / LOG_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return []
