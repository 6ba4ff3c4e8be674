"""The controller: one job (or a batch sharing one rental) from "validated" to "LoRA on disk, nothing billing".

Phases follow DESIGN.md, one module each: provision.py, wait.py, upload.py (and the stock install), training.py
(agent start, monitor rounds, lease renewal), finish.py (pull, verify, report, calibration), closing.py
(interrupts and teardown); their shared memory is context.py. Invariants kept here:
- the job's state is written before each phase starts, and an instance id is written the moment a provider
  returns one (even inside an error);
- every way out — success, error, Ctrl-C, SIGTERM — goes through teardown unless the user chose to detach
  or `--keep`, and teardown confirms the instance is gone or says loudly that it is not.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

from lorarun.provider_adapters.base import Instance, InstanceStatus, Offer, Provider
from lorarun.runner.console import err_console
from lorarun.runner.errors import EngineFailed, Interrupted, PipelineError, TeardownUnconfirmed
from lorarun.runner.job.validate import ValidatedJob
from lorarun.runner.price import startup_timing
from lorarun.runner.price.budget import SpendTracker
from lorarun.runner.price.estimate import Estimate
from lorarun.runner.publish.release import publish_finished
from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run import (
    boot,
    closing,
    detached_resume,
    finish,
    interruption,
    provision,
    stock,
    training,
    upload,
    wait,
)
from lorarun.runner.run.context import ConnectFn, JobRun, PipelineOptions, Rental, RunContext
from lorarun.runner.state import JobState, JobStore, new_job_id

__all__ = ["ConnectFn", "DetachRequested", "JobRun", "Pipeline", "PipelineOptions", "Rental", "TerminateRequested"]


class TerminateRequested(KeyboardInterrupt):
    """SIGTERM: stop cleanly without asking (a service manager or `kill` sent it, not a person)."""


class DetachRequested(TerminateRequested):
    """A batch's Ctrl-C answered "detach": leave training running without asking again (runner/batch)."""


def _sigterm_as_interrupt(signum, frame):
    raise TerminateRequested


def _catch_sigterm():
    """SIGTERM as a clean stop; None where signals cannot be set (a batch rental's thread: the batch's main thread
    turns SIGTERM into a stop of the whole batch)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


class Pipeline(RunContext):
    @classmethod
    def start(
        cls, jobs: list[ValidatedJob], provider: Provider, ranked: list[Estimate], *, store: JobStore, **kwargs
    ) -> Pipeline:
        """A new submission: one job folder and state per job, written before anything is rented. `ranked` are
        the fitting estimates, cheapest first; provisioning falls back along them when an offer is taken."""
        best = ranked[0]
        costs = (
            list(best.per_job_costs)
            if len(best.per_job_costs) == len(jobs)
            else [best.total_cost] + [None] * (len(jobs) - 1)
        )
        runs = [
            JobRun(job=j, state=_new_state(store, j, provider.name, c), predicted_cost=c) for j, c in zip(jobs, costs)
        ]
        pipeline = cls(runs, provider, best.offer, store=store, **kwargs)
        pipeline.ranked = list(ranked)
        return pipeline

    @classmethod
    def reattach(cls, job: ValidatedJob, state: JobState, provider: Provider, *, store: JobStore, **kwargs) -> Pipeline:
        """Pick up a job recorded on disk (`attach`, `down`): the rental is rebuilt from the state file."""
        offer = Offer(
            provider=provider.name,
            id=state.offer_id or "",
            gpu_name=state.gpu or "",
            gpu_count=1,
            vram_gb=0.0,
            price_per_hour=state.price_per_hour or 0.0,
            interruptible=state.interruptible,
        )
        pipeline = cls(
            [JobRun(job=job, state=state, predicted_cost=state.predicted_cost)], provider, offer, store=store, **kwargs
        )
        provisioned = [t for phase, t in state.history if phase == "provision"]
        pipeline.rental.started_at = provisioned[0] if provisioned else state.created_at
        pipeline.spend = SpendTracker(
            price_per_hour=offer.price_per_hour, started_at=pipeline.rental.started_at, clock=pipeline.clock.wall
        )
        if state.instance_id:
            pipeline.rental.instance = provider.get(state.instance_id) or Instance(
                provider=provider.name,
                id=state.instance_id,
                label=state.instance_label or "",
                status=InstanceStatus.TERMINATED,
            )
        return pipeline

    def run(self, *, stop: bool = False) -> list[JobRun]:
        """From wherever the jobs stand to teardown. `stop=True` (`lorarun down`): stop, pull, destroy."""
        detached = False
        previous_sigterm = _catch_sigterm()  # None in a batch rental's thread
        self.record_all(controller_pid=os.getpid(), controller_host=socket.gethostname())
        try:
            detached_resume.resume_if_taken_back(self, stop=stop)  # attach: taken back while detached
            while True:  # a failed start (runner/run/boot.py) is destroyed and the next offer rented
                if self.rental.instance is None:
                    provision.provision(self)
                try:
                    if self.rental.transport is None:
                        wait.wait_ready(self)
                    break
                except boot.StartFailed as failed:
                    if not boot.fall_back_after(self, failed):
                        raise
            if stop:
                closing.graceful_stop(self, "stopped by `lorarun down`")
            else:
                interruption.run_jobs(self, self._run_jobs)  # _run_jobs, resumed on a new rental after an interruption
        except KeyboardInterrupt as interrupt:
            detached = closing.on_interrupt(
                self, ask=not isinstance(interrupt, TerminateRequested), detach=isinstance(interrupt, DetachRequested)
            )
            if not detached:
                raise Interrupted(closing.interrupted_message(self)) from None
        except BaseException as exc:
            for run in self.runs:
                if run.outcome is None:
                    run.outcome = "failed"
                    self.record(run, message=f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            if previous_sigterm is not None:
                signal.signal(signal.SIGTERM, previous_sigterm)
            if not detached:
                closing.teardown_guarded(self)
                publish_finished(self.runs, self.store, self.notify)  # `output.hub`: laptop → Hub (publish/)
            self.notify.close()
        if self.rental.teardown is not None and not self.rental.teardown.confirmed:
            # Every other path out already exits non-zero; a job that went well must not exit 0 either (#15.5).
            raise TeardownUnconfirmed(self.rental.teardown.message)
        return self.runs

    def _run_jobs(self) -> None:
        """A batch runs one job after another on the same machine; a failed job does not stop the next one."""
        failures: list[EngineFailed] = []
        for run in self.runs:
            if run.state.is_final or run.outcome is not None:
                continue  # a batch reattached after some jobs finished
            if self.batch_stop is not None and (why := self.batch_stop()):
                run.outcome = "not run"  # runner/batch/fanout.py reports it (the batch was stopped)
                self.record(run, message=f"not run: {why}")
                continue
            try:
                self._run_job(run)
            except EngineFailed as exc:
                run.engine_failed = True
                self.record(run, message=str(exc))
                failures.append(exc)
                if len(self.runs) > 1:
                    err_console.print(f"[red]{run.state.name}: {exc}[/]; going on with the next job", highlight=False)
        if failures:
            raise failures[0]

    def _run_job(self, run: JobRun) -> None:
        """Upload and start, or — for a reattached job whose agent already runs — carry on from there."""
        transport = self.rental.transport
        if transport is None:  # `_run_jobs` connects before any job runs
            raise PipelineError(f"no link to instance {self.rental.live.id}")
        layout = RemoteLayout.resolve(transport, run.state.job_id)
        self.record(run, remote_dir=layout.root)
        run.timings.update(startup_timing.read(transport))
        if not transport.exists(layout.status):
            if stock.is_stock(self.image) and self.provider.name in stock.STOCK_IMAGES:
                # First: the upload's remote sha256 manifest runs on the instance's Python (lorarun-python).
                layout = upload.install_lorarun(self, run, transport, layout)
            upload.upload(self, run, transport, layout)  # skips files already there: a resumed upload is cheap
            interruption.before_agent(self, run, transport, layout)  # a resumed job's state, from home
            training.start_agent(self, run, transport, layout)
        try:
            monitor = training.monitor(self, run, transport, layout)
            finish.finish(self, run, transport, layout, monitor)
        except OSError as exc:  # this laptop could not write, anywhere in the pull (#27): keep the instance
            held = finish.held_on_local_write_error(self, run, exc)
            if held is exc:
                raise
            raise held from None


def _new_state(store: JobStore, job: ValidatedJob, provider_name: str, predicted_cost: float | None) -> JobState:
    state = JobState(
        job_id=new_job_id(job.spec.name),
        name=job.spec.name,
        job_file=job.spec.source,
        provider=provider_name,
        output_dir=str(job.spec.output_dir),
        predicted_cost=predicted_cost,
    )
    state = store.create(state)
    shutil.copyfile(job.spec.source, store.job_dir(state.job_id) / Path(job.spec.source).name)
    return store.advance(state, "validate")
