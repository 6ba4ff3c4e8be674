"""What every phase of a run reads and writes: the options, the rental, the jobs' runs and their state on disk.

`RunContext` is the pipeline's memory. The phase modules (provision, wait, upload, training, finish, closing) are
functions of it; `Pipeline` (pipeline.py) is a `RunContext` that knows the order of the phases. Keeping the data
here and the flow there lets a phase import what it needs without importing the pipeline (no cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lorarun.provider_adapters.base import Instance, Offer, Provider
from lorarun.runner.errors import PipelineError
from lorarun.runner.job.validate import ValidatedJob
from lorarun.runner.price.budget import SpendTracker
from lorarun.runner.price.estimate import Estimate
from lorarun.runner.run.image_build import image_for_job
from lorarun.runner.run.notify import JobNotifications
from lorarun.runner.run.poller import REAL_CLOCK, Clock
from lorarun.runner.run.teardown import TeardownResult
from lorarun.runner.state import JobState, JobStore
from lorarun.sshlink.transport import Transport


@dataclass(frozen=True)
class PipelineOptions:
    assume_yes: bool = False
    keep: bool = False  # leave the instance up on purpose (and say how to kill it)
    interactive: bool = True  # may ask questions (Ctrl-C: stop or detach?)
    boot_timeout: float = 900.0
    ssh_timeout: float = 300.0
    poll_interval: float = 2.0
    stop_timeout: float = 300.0  # how long a clean stop may take (engine saves a checkpoint first)
    grace_seconds: float = 900.0  # the agent's wait for a controller after the lease or the end of training
    lease_seconds: float = 6 * 3600.0
    create_sweep_seconds: float = 90.0  # after an unclean create: how long to look for an instance it made
    hard_lease_seconds: float | None = None  # override of the instance's hard deadline (default: from the budget)


@dataclass
class Rental:
    """The machine a batch runs on, once there is one."""

    provider: Provider
    offer: Offer
    instance: Instance | None = None
    transport: Transport | None = None
    started_at: float | None = None
    teardown: TeardownResult | None = None

    @property
    def live(self) -> Instance:
        """The rented instance, for the phases that run only once there is one (after provision)."""
        if self.instance is None:
            raise PipelineError(f"no {self.provider.name} instance is rented yet")
        return self.instance


@dataclass
class JobRun:
    job: ValidatedJob
    state: JobState
    predicted_cost: float | None = None
    outcome: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    engine_failed: bool = False  # its own training failed (a batch does not move it to another rental)


class ConnectFn(Protocol):
    """Opens the link to a rented instance (`once`: one attempt, no reconnect backoff; the boot phase polls)."""

    def __call__(self, rental: Rental, state: JobState, job_dir: Path, *, once: bool = False) -> Transport: ...


class RunContext:
    """One submission (or one reattached job) in memory; every change to a job's state goes to disk first."""

    def __init__(
        self,
        runs: list[JobRun],
        provider: Provider,
        offer: Offer,
        *,
        store: JobStore,
        connect: ConnectFn,
        options: PipelineOptions = PipelineOptions(),
        clock: Clock = REAL_CLOCK,
        image: str | None = None,
        max_cost: float | None = None,
    ):
        self.provider = provider
        self.store = store
        self.connect = connect
        self.options = options
        self.clock = clock
        # The job's own image, else the user's configured one (LORARUN_IMAGE / user config), else the default.
        self.image = image or image_for_job(runs[0].job.spec.resources.image)[0]
        self.max_cost = max_cost
        self.rental = Rental(provider=provider, offer=offer)
        self.runs = runs
        self.ranked: list[Estimate] = []  # the fitting estimates, cheapest first (empty on reattach)
        self.spend: SpendTracker | None = None
        self.stop_requested: str | None = None  # why the run is being stopped, once it is
        self.hard_deadline: float | None = None  # the instance's LORARUN_DEADLINE (unknown on reattach)
        self.held_for_pull: JobRun | None = None  # outputs not home: teardown keeps the instance for `attach`
        self.start_failures = 0  # instances that failed to start in this submission (runner/run/boot.py)
        self.notify = JobNotifications.for_runs(runs, self.spent)  # `notify.webhook`: events out (notify.py)
        self.batch_stop: Callable[[], str | None] | None = None  # runner/batch: why the rest must not start

    def advance(self, run: JobRun, phase: str, message: str = "") -> None:
        run.state = self.store.advance(run.state, phase, message)
        self.notify.phase(run, phase, message, provider=self.provider.name, gpu=self.gpu_text())

    def record(self, run: JobRun, **changes) -> None:
        run.state = self.store.update(run.state, **changes)

    def record_all(self, **changes) -> None:
        for run in self.runs:
            self.record(run, **changes)

    @property
    def primary(self) -> JobRun:
        return self.runs[0]

    def spent(self) -> float:
        return self.spend.spent() if self.spend else 0.0

    def gpu_text(self) -> str:
        offer = self.rental.offer
        return f"{offer.gpu_count}× {offer.gpu_name}" if offer.gpu_count > 1 else offer.gpu_name


def shell_quote(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"
