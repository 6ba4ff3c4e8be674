"""The rentals of a batch side by side: one thread and one `Pipeline` per rental, one budget, one stop.

Isolation (issue 19): a job whose own training fails is reported with its reason and the rest go on (the
pipeline's `_run_jobs` already does so on one rental); a rental that fails to start falls back inside its pipeline
exactly as a single job does (runner/run/boot.py: destroy, exclude the machine, rent the next offer); a rental
that dies later (interrupted, vanished, SSH gone for good: any error out of `Pipeline.run` but a job's own
`EngineFailed`) is torn down by its pipeline, and its unfinished jobs move to a replacement rental — new job
ids, the failed attempt's folder kept for `gc` and `status` — on the offers left once that machine is excluded.

One budget: each pipeline still checks its own spend against `max_cost` (never looser than the whole), and the
batch adds every rental's spend; at `max_cost` it asks every running job to stop (they save and come home) and
starts nothing more. A stop of the whole batch (Ctrl-C, SIGTERM, `lorarun down BATCH`) is the same request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from lorarun.provider_adapters.base import Provider
from lorarun.runner.batch.plan import BatchPlan
from lorarun.runner.batch.record import BatchJob, BatchRecord, BatchStore, new_batch_id
from lorarun.runner.console import err_console, hidden_views, money
from lorarun.runner.errors import EngineFailed, TeardownUnconfirmed
from lorarun.runner.job.validate import ValidatedJob
from lorarun.runner.price.budget import DEFAULT_STOP_RESERVE_S
from lorarun.runner.price.estimate import Estimate
from lorarun.runner.run.pipeline import JobRun, Pipeline, PipelineOptions, _new_state
from lorarun.runner.run.poller import REAL_CLOCK, Clock
from lorarun.runner.state import JobStore

MAX_REPLACEMENTS = 2  # rentals that die after starting, per rental slot, before its jobs are reported as failed


@dataclass
class RentalSlot:
    """One rental of the batch, and the replacements it rents when one dies."""

    number: int  # 1-based, as the table and the batch file show it
    runs: list[JobRun]
    ranked: list[Estimate]
    pipeline: Pipeline | None = None
    spent_before: float = 0.0  # what earlier (failed) rentals of this slot cost
    replacements: int = 0
    error: BaseException | None = None
    unconfirmed: list[str] = field(default_factory=list)  # teardown messages that did not confirm a destroy
    thread: threading.Thread | None = None
    reattached: Pipeline | None = None  # `attach BATCH`: the running rental rebuilt from its jobs' state files

    def spent(self) -> float:
        live = self.pipeline.spent() if self.pipeline is not None and self.pipeline.rental.teardown is None else 0.0
        return self.spent_before + live

    def billing_per_hour(self) -> float:
        """What this slot's live rental bills per hour now (0 before it is rented and once it is destroyed)."""
        pipeline = self.pipeline
        if pipeline is None or pipeline.rental.teardown is not None or pipeline.spend is None:
            return 0.0
        return pipeline.spend.price_per_hour + pipeline.spend.storage_per_hour

    @property
    def instance_id(self) -> str | None:
        instance = self.pipeline.rental.instance if self.pipeline else None
        return instance.id if instance else None


class BatchRun:
    def __init__(
        self,
        jobs: list[ValidatedJob],
        plan: BatchPlan | None,
        provider_factory: Callable[[], Provider],
        *,
        store: JobStore,
        connect,
        options: PipelineOptions,
        max_cost: float | None,
        clock: Clock = REAL_CLOCK,
        sweep: str | None = None,
        on_moved: Callable[[JobRun], None] | None = None,
        record: BatchRecord | None = None,
    ):
        self.jobs = jobs
        self.on_moved = on_moved  # told of each new attempt (its output claim names it: runner/job/output_guard.py)
        self.plan = plan
        self.provider_factory = provider_factory
        self.provider_name = provider_factory().name
        self.store = store
        self.batches = BatchStore(store)
        self.connect = connect
        self.options = options
        self.max_cost = max_cost
        self.clock = clock
        self.stop_reason: str | None = None
        self.detached = False
        self._lock = threading.Lock()
        self.slots: list[RentalSlot] = []
        # A new batch from its plan, or one rebuilt from its record on disk (`resume`): one of the two, always.
        if plan is not None:
            self.record = self._create(plan, sweep)
        elif record is not None:
            self.record = record
        else:
            raise ValueError("a batch needs its plan (a new batch) or its record (a resumed one)")

    # ---- before anything is rented: every job's state and the batch file --------------------------------------
    @classmethod
    def resume(
        cls,
        record: BatchRecord,
        slots: list[RentalSlot],
        provider_factory: Callable[[], Provider],
        *,
        store: JobStore,
        connect,
        options: PipelineOptions,
        max_cost: float | None,
    ) -> BatchRun:
        """`attach BATCH`: the batch's rentals rebuilt from disk (runner/batch/resume.py builds the slots)."""
        batch = cls(
            [], None, provider_factory, store=store, connect=connect, options=options, max_cost=max_cost, record=record
        )
        batch.slots = slots
        return batch

    def _create(self, plan: BatchPlan, sweep: str | None) -> BatchRecord:
        batch_jobs = []
        for number, rental in enumerate(plan.rentals, 1):
            runs = []
            for index in rental.share.jobs:
                job = self.jobs[index]
                cost = plan.job_cost(index)
                run = JobRun(job=job, state=_new_state(self.store, job, self.provider_name, cost), predicted_cost=cost)
                runs.append(run)
                batch_jobs.append((index, BatchJob(job.spec.name, str(job.spec.source), (run.state.job_id,), number)))
            self.slots.append(RentalSlot(number=number, runs=runs, ranked=list(rental.ranked)))
        ordered = tuple(j for _, j in sorted(batch_jobs, key=lambda pair: pair[0]))
        record = BatchRecord(
            batch_id=new_batch_id(), provider=self.provider_name, rentals=len(self.slots), jobs=ordered, sweep=sweep
        )
        return self.batches.save(record)

    @property
    def job_ids(self) -> list[str]:
        return [run.state.job_id for slot in self.slots for run in slot.runs]

    # ---- the rentals ------------------------------------------------------------------------------------------
    def start(self) -> None:
        for slot in self.slots:
            slot.thread = threading.Thread(target=self._drive, args=(slot,), name=f"rental-{slot.number}")
            slot.thread.start()

    def alive(self) -> bool:
        return any(s.thread is not None and s.thread.is_alive() for s in self.slots)

    def join(self, timeout: float | None = None) -> None:
        for slot in self.slots:
            if slot.thread is not None:
                slot.thread.join(timeout)

    def _drive(self, slot: RentalSlot) -> None:
        """One rental slot, in its own thread: run its jobs; when the rental dies, rent a replacement for the jobs
        that did not finish. Never raises: what went wrong is on the jobs and on the slot."""
        with hidden_views():
            while True:
                pending = [r for r in slot.runs if r.outcome is None]
                if not pending or not (slot.ranked or slot.reattached):
                    break
                try:
                    failure = self._one_rental(slot, pending)
                except KeyboardInterrupt as late:  # a stop that reached this thread between two rentals
                    failure = late
                if failure is None or self.detached:
                    break
                moving = [r for r in pending if r.outcome not in ("finished", "stopped") and not r.engine_failed]
                if self.stop_reason or slot.replacements >= MAX_REPLACEMENTS or not moving:
                    slot.error = failure
                    break
                slot.replacements += 1
                slot.runs = [self._moved(slot, r, failure) for r in moving]

    def _one_rental(self, slot: RentalSlot, runs: list[JobRun]) -> BaseException | None:
        if slot.reattached is not None:
            pipeline, slot.reattached = slot.reattached, None
        else:
            pipeline = Pipeline(
                runs,
                self.provider_factory(),
                slot.ranked[0].offer,
                store=self.store,
                connect=self.connect,
                options=self.options,
                clock=self.clock,
                max_cost=self.max_cost,
            )
            pipeline.ranked = list(slot.ranked)
        pipeline.batch_stop = lambda: self.stop_reason
        slot.pipeline = pipeline
        failure: BaseException | None = None
        try:
            pipeline.run()
        except TeardownUnconfirmed as exc:
            slot.unconfirmed.append(str(exc))
        except EngineFailed:
            pass  # a job's own failure: on its run (engine_failed), the rest of the rental went on
        except BaseException as exc:  # the rental itself: interrupted, vanished, no offer left, outputs held...
            failure = exc
            err_console.print(
                f"[yellow]rental {slot.number}: {type(exc).__name__}: {exc}[/]", highlight=False, markup=True
            )
        finally:
            slot.spent_before += pipeline.spent()
            self.mark_not_run(runs)
            if pipeline.rental.teardown is not None and not pipeline.rental.teardown.confirmed:
                slot.unconfirmed.append(pipeline.rental.teardown.message)
            # The failed machine is not rented again by this slot (boot.fall_back_after's rule, kept across rentals).
            used = pipeline.rental.offer
            slot.ranked = [
                e
                for e in pipeline.ranked or slot.ranked
                if failure is None or (e.offer.id != used.id and not (used.machine and e.offer.machine == used.machine))
            ]
        return failure

    def mark_not_run(self, runs: list[JobRun]) -> None:
        """A stop (Ctrl-C, SIGTERM, `down BATCH`) reached the rental while these jobs still waited their turn: say so."""
        if not self.stop_reason:
            return
        for run in runs:
            started = any(phase in ("upload", "run", "monitor", "finish") for phase, _ in run.state.history)
            if run.outcome in (None, "failed") and not started and not run.engine_failed:
                run.outcome = "not run"
                run.state = self.store.update(run.state, message=f"not run: {self.stop_reason}")

    def _moved(self, slot: RentalSlot, run: JobRun, failure: BaseException) -> JobRun:
        """A new attempt of `run` for the replacement rental: a new job folder (the old one keeps its instance)."""
        state = _new_state(self.store, run.job, self.provider_name, run.predicted_cost)
        self.store.acquire(state.job_id, "submit")
        reason = f"moved from rental {slot.number} ({type(failure).__name__}: {str(failure)[:200]})"
        state = self.store.update(state, message=reason)
        self.batches.moved(self.record.batch_id, run.job.spec.name, state.job_id, slot.number)
        err_console.print(f"{run.job.spec.name}: {reason}; a replacement rental runs it", highlight=False)
        moved = JobRun(job=run.job, state=state, predicted_cost=run.predicted_cost)
        if self.on_moved is not None:
            self.on_moved(moved)
        return moved

    # ---- one budget, one stop ---------------------------------------------------------------------------------
    def spent(self) -> float:
        return sum(s.spent() for s in self.slots)

    def check_budget(self) -> None:
        if self.max_cost is None or self.stop_reason:
            return
        spent = self.spent()
        # As one job does (SpendTracker.over): stop while every live rental can still pull and be destroyed
        # within the budget.
        reserve = sum(s.billing_per_hour() for s in self.slots) * DEFAULT_STOP_RESERVE_S / 3600
        if spent + reserve >= self.max_cost:
            self.stop(
                f"budget reached: {money(spent)} spent of max_cost {money(self.max_cost)} for the whole batch "
                f"(keeping enough for every rental's final pull and teardown); stopped cleanly with the last "
                f"checkpoints"
            )

    def stop(self, reason: str) -> None:
        """Every running job saves and comes home (the pipelines' `down` request), nothing new starts."""
        with self._lock:
            if self.stop_reason:
                return
            self.stop_reason = reason
        err_console.print(f"[yellow]{reason}[/]", highlight=False)
        for slot in self.slots:
            for run in slot.runs:
                if run.outcome is None and not self.store.load(run.state.job_id).is_final:
                    self.store.request_stop(run.state.job_id, reason)

    def poll_stop_request(self) -> None:
        """`lorarun down BATCH` from another terminal leaves a request beside the batch file."""
        path = self.batches.stop_request_path(self.record.batch_id)
        if path.exists():
            reason = path.read_text(encoding="utf-8").strip() or "stopped by `lorarun down`"
            path.unlink(missing_ok=True)
            self.stop(reason)

    # ---- the outcome ------------------------------------------------------------------------------------------
    def current_runs(self) -> list[JobRun]:
        return [run for slot in self.slots for run in slot.runs]

    def outcomes(self) -> dict[str, str | None]:
        """Each job's outcome on its current attempt: finished, stopped, failed, not run (None: never got that far)."""
        return {run.job.spec.name: run.outcome for run in self.current_runs()}

    def clear_stop_requests(self) -> None:
        """Stop requests a job never read (it had not started) must not stop a later `attach` of it."""
        for run in self.current_runs():
            self.store.take_stop_request(run.state.job_id)
        self.batches.stop_request_path(self.record.batch_id).unlink(missing_ok=True)

    def unconfirmed(self) -> list[str]:
        return [m for s in self.slots for m in s.unconfirmed]
