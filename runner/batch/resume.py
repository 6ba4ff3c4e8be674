"""A batch picked up from disk (`attach BATCH`, `down BATCH`): its unfinished jobs grouped by the instance they
were running on — one reattached pipeline per instance, its jobs in the batch's order, so a rental's queued jobs
run after the one it was training — and the jobs that never got an instance, planned onto fresh rentals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lorarun.provider_adapters.base import Provider
from lorarun.runner.batch.fanout import RentalSlot
from lorarun.runner.batch.plan import plan_batch
from lorarun.runner.batch.record import BatchRecord, BatchStore
from lorarun.runner.console import err_console
from lorarun.runner.job.validate import ValidatedJob, validate_job
from lorarun.runner.run.pipeline import JobRun, Pipeline, PipelineOptions
from lorarun.runner.state import JobState


def job_for(state: JobState) -> ValidatedJob | None:
    """The job as submitted, re-validated (its paths are relative to its job file); None if that file is unusable."""
    try:
        return validate_job(Path(state.job_file), provider=state.provider, out=Path(state.output_dir))
    except Exception:
        return None


def unfinished(record: BatchRecord, batches: BatchStore) -> list[tuple[int, JobState]]:
    """(rental, state) of every job of the batch whose current attempt has not ended."""
    out = []
    for job in record.jobs:
        state = batches.jobs.load(job.job_id)
        if not state.is_final:
            out.append((job.rental, state))
    return out


def rebuild_slots(
    record: BatchRecord,
    batches: BatchStore,
    provider_factory: Callable[[], Provider],
    *,
    connect,
    options: PipelineOptions,
    max_cost: float | None,
) -> list[RentalSlot]:
    store = batches.jobs
    by_instance: dict[str, list[tuple[int, JobState, ValidatedJob]]] = {}
    never_rented: list[tuple[int, JobState, ValidatedJob]] = []
    for rental, state in unfinished(record, batches):
        job = job_for(state)
        if job is None:
            err_console.print(
                f"[yellow]{state.name}: job file {state.job_file} is unusable; `lorarun down {state.job_id}` "
                f"destroys its instance[/]",
                highlight=False,
            )
            continue
        if state.instance_id:
            by_instance.setdefault(state.instance_id, []).append((rental, state, job))
        else:
            never_rented.append((rental, state, job))
    slots = []
    for members in by_instance.values():
        rental, state, job = members[0]
        pipeline = Pipeline.reattach(
            job, state, provider_factory(), store=store, connect=connect, options=options, max_cost=max_cost
        )
        pipeline.runs.extend(JobRun(job=j, state=s, predicted_cost=s.predicted_cost) for _, s, j in members[1:])
        slots.append(RentalSlot(number=rental, runs=list(pipeline.runs), ranked=[], reattached=pipeline))
    if never_rented:
        jobs = [j for _, _, j in never_rented]
        plan = plan_batch(provider_factory(), jobs, max(1, min(record.rentals, len(jobs))))
        for share in plan.rentals:
            runs = [
                JobRun(
                    job=never_rented[i][2], state=never_rented[i][1], predicted_cost=never_rented[i][1].predicted_cost
                )
                for i in share.share.jobs
            ]
            slots.append(RentalSlot(number=never_rented[share.share.jobs[0]][0], runs=runs, ranked=list(share.ranked)))
    return slots
