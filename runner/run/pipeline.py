"""The controller: one job (or a batch sharing one rental) from "validated" to "LoRA on disk, nothing billing".

Phases follow DESIGN.md. Invariants kept here:
- the job's state is written before each phase starts, and an instance id is written the moment a provider
  returns one (even inside an error);
- every way out — success, error, Ctrl-C, SIGTERM — goes through `_teardown()` unless the user chose to detach
  or `--keep`, and teardown confirms the instance is gone or says loudly that it is not.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lorarun.image.instance.agent import AgentConfig
from lorarun.image.instance.lease import DEADLINE_ENV, LEASE_FILE, SELF_DESTRUCT_ENV, split_env
from lorarun.image.instance.self_destroy import SelfDestroyConfig
from lorarun.provider_adapters.base import Instance, InstanceSpec, InstanceStatus, Offer, Provider, job_label
from lorarun.provider_adapters.errors import ProviderError
from lorarun.runner.console import err_console, money
from lorarun.runner.errors import Interrupted, PipelineError, TeardownUnconfirmed
from lorarun.runner.job import flux_files
from lorarun.runner.job.validate import ValidatedJob
from lorarun.runner.price import startup_timing
from lorarun.runner.price.budget import SpendTracker
from lorarun.runner.price.estimate import Estimate
from lorarun.runner.price.offer_choice import create_cheapest
from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run import boot, fault_messages, stock, stock_watchdog
from lorarun.runner.run.image_build import image_for_job, registry_login
from lorarun.runner.run.lease import LeaseRenewer, hard_lease_seconds
from lorarun.runner.run.local_writes import is_local_write_error
from lorarun.runner.run.monitor import JobMonitor
from lorarun.runner.run.outputs_home import bring_home, instance_grace_seconds, local_write_problem, not_home_error
from lorarun.runner.run.poller import REAL_CLOCK, Clock, PollTimeout, poll
from lorarun.runner.run.progress import TrainingView, pull_bar, transfer_bar
from lorarun.runner.run.teardown import (
    TeardownResult,
    create_may_have_happened,
    destroy_and_confirm,
    report,
    sweep_label,
)
from lorarun.runner.state import JobState, JobStore
from lorarun.sshlink.sftp_io import local_files
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


@dataclass
class JobRun:
    job: ValidatedJob
    state: JobState
    predicted_cost: float | None = None
    outcome: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


ConnectFn = Callable[[Rental, JobState, Path], Transport]


class Pipeline:
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
        self.ranked: list[Estimate] = []
        self.spend: SpendTracker | None = None
        self._stop_requested: str | None = None
        self.hard_deadline: float | None = None  # the instance's LORARUN_DEADLINE (unknown on reattach)
        self._held_for_pull: JobRun | None = None  # outputs not home: teardown keeps the instance for `attach`

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

    # ---- state -------------------------------------------------------------------------------------------------
    def _advance(self, run: JobRun, phase: str, message: str = "") -> None:
        run.state = self.store.advance(run.state, phase, message)

    def _record(self, run: JobRun, **changes) -> None:
        run.state = self.store.update(run.state, **changes)

    def _record_all(self, **changes) -> None:
        for run in self.runs:
            self._record(run, **changes)

    @property
    def primary(self) -> JobRun:
        return self.runs[0]

    # ---- the flow ----------------------------------------------------------------------------------------------
    def run(self, *, stop: bool = False) -> list[JobRun]:
        """From wherever the jobs stand to teardown. `stop=True` (`lorarun down`): stop, pull, destroy."""
        detached = False
        previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        self._record_all(controller_pid=os.getpid(), controller_host=socket.gethostname())
        try:
            while True:  # a failed start (runner/run/boot.py) is destroyed and the next offer rented
                if self.rental.instance is None:
                    self._provision()
                try:
                    if self.rental.transport is None:
                        self._wait_ready()
                    break
                except boot.StartFailed as failed:
                    if not boot.fall_back_after(self, failed):
                        raise
            if stop:
                self._graceful_stop("stopped by `lorarun down`")
            else:
                self._run_jobs()
        except KeyboardInterrupt as interrupt:
            detached = self._on_interrupt(ask=not isinstance(interrupt, TerminateRequested))
            if not detached:
                raise Interrupted(self._interrupted_message()) from None
        except BaseException as exc:
            for run in self.runs:
                if run.outcome is None:
                    run.outcome = "failed"
                    self._record(run, message=f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)
            if not detached:
                self._teardown_guarded()
        if self.rental.teardown is not None and not self.rental.teardown.confirmed:
            # Every other path out already exits non-zero; a job that went well must not exit 0 either (#15.5).
            raise TeardownUnconfirmed(self.rental.teardown.message)
        return self.runs

    def _provision(self) -> None:
        for run in self.runs:
            self._advance(run, "provision")
        primary = self.primary
        label = job_label(primary.state.job_id)
        ssh_dir = self.store.job_dir(primary.state.job_id) / "ssh"
        public_key = _job_public_key(ssh_dir, primary.state.job_id, self.provider.name)
        image = stock.stock_image(self.provider.name) if stock.is_stock(self.image) else self.image
        destruct = self.provider.self_destruct()
        hard_deadlines: dict[str, float] = {}

        # A private image: the provider pulls it with the user's own `docker login` for its registry.
        login = None if stock.is_stock(self.image) else registry_login(image)

        def spec_for(estimate: Estimate) -> InstanceSpec:
            # The lease from the first second (#11.3): the image's watchdog reads these before any controller
            # connects. Names of variables and URLs only; the instance's own key is the provider's to inject.
            hard = int(
                self.clock.wall()
                + hard_lease_seconds(
                    estimate.total_seconds,
                    estimate.offer.price_per_hour,
                    self.max_cost,
                    self.options.hard_lease_seconds,
                )
            )
            hard_deadlines[estimate.offer.id] = float(hard)
            env = [("LORARUN_JOB_ID", primary.state.job_id), (DEADLINE_ENV, str(hard))]
            if destruct is not None:
                env.extend(split_env(SELF_DESTRUCT_ENV, json.dumps(destruct.to_dict(), separators=(",", ":"))))
            return InstanceSpec(
                label=label,
                image=image,
                disk_gb=self.primary.job.spec.resources.disk_gb,
                ssh_public_key=public_key,
                env=tuple(env),
                bid_price_per_hour=None,
                registry_login=login,
            )

        try:
            estimate, instance = create_cheapest(self.provider, self.ranked, spec_for, self._on_leaked_instance)
        except BaseException as failure:
            # Ctrl-C while a create was in flight: an adapter that got an id puts it on the exception.
            leaked = getattr(failure, "instance_id", None)
            if leaked:
                self._adopt(
                    Instance(provider=self.provider.name, id=str(leaked), label=label, status=InstanceStatus.PENDING)
                )
            elif create_may_have_happened(failure):
                self._sweep_after_failed_create(label, failure)
            raise
        self.rental.offer = estimate.offer
        self.hard_deadline = hard_deadlines.get(estimate.offer.id)
        self._record_all(
            instance_label=label,
            offer_id=estimate.offer.id,
            gpu=self._gpu_text(),
            price_per_hour=estimate.offer.price_per_hour,
        )
        self._adopt(instance)
        err_console.print(
            f"rented [bold]{self._gpu_text()}[/] on {self.provider.name} as instance "
            f"[bold]{instance.id}[/] at {money(self.rental.offer.price_per_hour)}/h",
            highlight=False,
        )

    def _sweep_after_failed_create(self, label: str, failure: BaseException) -> None:
        """The create did not return cleanly, yet the provider may have made (or be making) the instance: find it
        by the job's label and destroy it before exiting (#11.2). What is found is recorded like a leaked id."""
        why = "interrupted" if isinstance(failure, KeyboardInterrupt) else f"failed ({type(failure).__name__})"
        err_console.print(
            f"the create {why}; checking for up to {self.options.create_sweep_seconds:.0f} s that "
            f"{self.provider.name} made no instance labelled {label}",
            highlight=False,
        )

        def found(instance_id: str) -> None:
            for run in self.runs:
                self._record(run, leaked_instance_ids=run.state.leaked_instance_ids + (instance_id,))

        results = sweep_label(
            self.provider, label, window=self.options.create_sweep_seconds, clock=self.clock, on_found=found
        )
        if any(not r.confirmed for r in results):
            self.rental.teardown = next(r for r in results if not r.confirmed)

    def _adopt(self, instance: Instance) -> None:
        """From here on the instance is ours to destroy: on disk first, then in memory."""
        self._record_all(instance_id=instance.id)
        self.rental.instance = instance
        self.rental.started_at = self.clock.wall()
        self.spend = SpendTracker.for_instance(
            instance,
            created_at=self.rental.started_at,
            fallback_price=self.rental.offer.price_per_hour,
            clock=self.clock.wall,
        )

    def _on_leaked_instance(self, instance_id: str) -> None:
        """A create that failed but returned an id (Vast `new_contract`): record it, destroy it, confirm it."""
        for run in self.runs:
            self._record(run, leaked_instance_ids=run.state.leaked_instance_ids + (instance_id,))
        result = destroy_and_confirm(self.provider, instance_id, clock=self.clock)
        report(result)

    def _wait_ready(self) -> None:
        for run in self.runs:
            if not run.state.is_final:
                self._advance(run, "wait")
        instance_id = self.rental.instance.id
        last = {"status": ""}

        def ready() -> Instance | None:
            instance = self.provider.get(instance_id)
            if instance is None or instance.status == InstanceStatus.TERMINATED:
                raise PipelineError(
                    f"instance {instance_id} is gone at {self.provider.name} (destroyed, or its "
                    f"lease ran out); {self._pulled_so_far()}"
                )
            boot.check_start(instance)  # the provider's fields say it will never come up
            if instance.status in (InstanceStatus.ERROR, InstanceStatus.STOPPED):
                raise boot.StartFailed(instance, instance.status_message or instance.status.value)
            last["status"] = instance.status.value
            if instance.status == InstanceStatus.RUNNING and (instance.ssh or self.provider.name == "local"):
                return instance
            return None

        started = self.clock.now()
        with err_console.status(f"waiting for instance {instance_id} to boot"):
            try:
                self.rental.instance = poll(
                    ready,
                    what=f"instance {instance_id} to boot",
                    timeout=self.options.boot_timeout,
                    interval=1.0,
                    clock=self.clock,
                    describe=lambda: last["status"],
                )
            except PollTimeout as exc:
                raise PipelineError(str(exc)) from None
            ssh = self.rental.instance.ssh
            if ssh:
                self._record_all(ssh_host=ssh.host, ssh_port=ssh.port, ssh_user=ssh.username)
            self.rental.transport = self._connect_with_patience()
        self.primary.timings["boot"] = self.clock.now() - started

    def _connect_with_patience(self) -> Transport:
        """A fresh instance reports RUNNING before its sshd has our key: keep trying for `ssh_timeout`."""
        from lorarun.sshlink.errors import AuthenticationFailed, ConnectionLost, RemoteTimeout

        errors: list[str] = []
        candidates = boot.SSHCandidates(self.rental.instance)  # direct first, then e.g. Vast's proxy

        def attempt() -> Transport | None:
            transport = None
            try:
                transport = self.connect(self.rental, self.primary.state, self.store.job_dir(self.primary.state.job_id))
                transport.run("true", timeout=30)
                return transport
            except (ConnectionLost, AuthenticationFailed, RemoteTimeout, OSError) as exc:
                errors.append(str(exc))
                if transport is not None:
                    transport.close()  # never leave a half-open session behind on the instance
                if (switch := candidates.failed()) is not None:
                    self.rental.instance = boot.with_endpoint(self.rental.instance, switch)
                    self._record_all(ssh_host=switch.host, ssh_port=switch.port, ssh_user=switch.username)
                return None

        try:
            return poll(
                attempt,
                what="SSH to answer",
                timeout=self.options.ssh_timeout,
                interval=2.0,
                clock=self.clock,
                describe=lambda: errors[-1] if errors else "",
            )
        except PollTimeout as exc:
            raise PipelineError(str(exc)) from None

    # ---- one job on the rented machine --------------------------------------------------------------------------
    def _run_jobs(self) -> None:
        """A batch runs one job after another on the same machine; a failed job does not stop the next one."""
        from lorarun.runner.errors import EngineFailed

        failures: list[EngineFailed] = []
        for run in self.runs:
            if run.state.is_final or run.outcome is not None:
                continue  # a batch reattached after some jobs finished
            try:
                self._run_job(run)
            except EngineFailed as exc:
                self._record(run, message=str(exc))
                failures.append(exc)
                if len(self.runs) > 1:
                    err_console.print(f"[red]{run.state.name}: {exc}[/]; going on with the next job", highlight=False)
        if failures:
            raise failures[0]

    def _run_job(self, run: JobRun) -> None:
        """Upload and start, or — for a reattached job whose agent already runs — carry on from there."""
        transport = self.rental.transport
        layout = RemoteLayout.resolve(transport, run.state.job_id)
        self._record(run, remote_dir=layout.root)
        run.timings.update(startup_timing.read(transport))
        if not transport.exists(layout.status):
            if stock.is_stock(self.image) and self.provider.name in stock.STOCK_IMAGES:
                # First: the upload's remote sha256 manifest runs on the instance's Python (lorarun-python).
                layout = self._install_lorarun(run, transport, layout)
            self._upload(run, transport, layout)  # skips files already there: a resumed upload is cheap
            self._start_agent(run, transport, layout)
        try:
            monitor = self._monitor(run, transport, layout)
            self._finish(run, transport, layout, monitor)
        except OSError as exc:  # this laptop could not write, anywhere in the pull (#27): keep the instance
            if not is_local_write_error(exc):
                raise
            raise self._hold_outputs(run, [local_write_problem(exc, run.job.spec.output_dir)]) from None

    def _upload(self, run: JobRun, transport: Transport, layout: RemoteLayout) -> None:
        self._advance(run, "upload")
        spec = run.job.spec
        started = self.clock.now()
        transport.run(f"mkdir -p {_q(layout.output)} {_q(layout.work)}", timeout=60)
        # Exactly what the scan accepted (images and the captions read for them), nothing else in the folder.
        with (
            transfer_bar(f"uploading {spec.dataset_dir.name}") as progress,
            fault_messages.vanished_is_said(spec.dataset_dir, self._rented_seconds),
        ):
            report_ = transport.put_files(
                local_files((f.rel, f.path) for f in run.job.scan.files()),
                layout.dataset,
                progress=progress,
                what=str(spec.dataset_dir),
            )
        uploaded = {"dataset": report_.manifest}
        reg_dir = None
        if spec.reg_dir:
            with transfer_bar(f"uploading {spec.reg_dir.name}") as progress:
                uploaded["reg"] = transport.put_files(
                    local_files((f.rel, f.path) for f in run.job.scan.files(reg=True)),
                    layout.reg,
                    progress=progress,
                    what=str(spec.reg_dir),
                ).manifest
            reg_dir = layout.reg
        write_upload_manifest(self.store.job_dir(run.state.job_id), uploaded)
        engine_cfg = spec.engine_config(
            job_id=run.state.job_id,
            dataset_dir=layout.dataset,
            reg_dir=reg_dir,
            output_dir=layout.output,
            work_dir=layout.work,
        )
        base = spec.model.base
        local_model = (
            spec.resolve(base) if base.startswith((".", "/", "~")) or base.endswith((".safetensors", ".ckpt")) else None
        )
        if local_model is not None and local_model.exists():
            if local_model.is_dir():
                with transfer_bar(f"uploading {local_model.name}") as progress:
                    transport.put_tree(local_model, layout.path("model", local_model.name), progress=progress)
            else:
                err_console.print(f"uploading {local_model.name} ({local_model.stat().st_size / 1e9:.1f} GB)")
                transport.put_file(local_model, layout.path("model", local_model.name))
            engine_cfg = dataclasses.replace(
                engine_cfg, model=dataclasses.replace(engine_cfg.model, base=layout.path("model", local_model.name))
            )
        engine_cfg = flux_files.upload(
            spec, engine_cfg, transport, layout, lambda line: err_console.print(line, highlight=False)
        )
        job_dir = self.store.job_dir(run.state.job_id)
        engine_cfg.write(job_dir / "engine_config.json")
        transport.put_file(job_dir / "engine_config.json", layout.engine_config)
        run.timings["upload"] = self.clock.now() - started
        run.timings["upload_bytes"] = float(report_.bytes_sent)
        err_console.print(
            f"uploaded {report_.files_sent} file(s), skipped {report_.files_skipped} already there", highlight=False
        )

    def _install_lorarun(self, run: JobRun, transport: Transport, layout: RemoteLayout) -> RemoteLayout:
        """The stock path: lorarun as a wheel beside the dataset, pip-installed on the instance (runner/run/stock.py)."""
        started = self.clock.now()
        wheel = stock.build_wheel(self.store.job_dir(run.state.job_id) / "wheel")
        remote_wheel = layout.path(wheel.name)
        transport.run(f"mkdir -p {_q(layout.root)}", timeout=60)
        transport.put_file(wheel, remote_wheel)
        err_console.print("installing lorarun on the stock image (pip)", highlight=False)
        # One pip cache per machine, beside the job folders: later jobs of a batch install from it.
        cache = posixpath.join(posixpath.dirname(layout.root), ".pip-cache")
        out = transport.run(stock.install_command(remote_wheel, cache), timeout=1800)
        run.timings["install"] = self.clock.now() - started
        python = (out.stdout.strip().splitlines() or [layout.python])[-1]
        installed = dataclasses.replace(layout, python=python)
        # The deadline guard our image starts at boot (#27), with the create call's own variables.
        guard = stock_watchdog.watchdog_env(
            self.primary.state.job_id, self.hard_deadline, self.provider.self_destruct()
        )
        stock_watchdog.start_watchdog(transport, installed, guard)
        return installed

    def _start_agent(self, run: JobRun, transport: Transport, layout: RemoteLayout) -> None:
        self._advance(run, "run")
        deadline = self.clock.wall() + self.options.lease_seconds
        destruct = self.provider.self_destruct()
        # The engine runs data-parallel over every visible GPU by itself (`--num-processes auto`, through
        # `accelerate launch`), so the command is the same on one GPU, eight, or a CPU.
        engine = [
            layout.python,
            "-m",
            "lorarun.image.engine",
            "train",
            "--config",
            layout.engine_config,
            "--num-processes",
            "auto",
        ]
        agent = AgentConfig(
            job_id=run.state.job_id,
            engine_command=tuple(engine),
            output_dir=layout.output,
            lease_deadline=deadline,
            grace_seconds=self.options.grace_seconds,
            hard_deadline=self.hard_deadline,
            # The adapter's plan crosses to the engine side as JSON (image/instance/self_destroy.py is the reader).
            self_destruct=SelfDestroyConfig.from_dict(destruct.to_dict()) if destruct else None,
        )
        job_dir = self.store.job_dir(run.state.job_id)
        (job_dir / "agent.json").write_text(agent.to_json(), encoding="utf-8")
        transport.put_file(job_dir / "agent.json", layout.agent_config)
        transport.start_detached(
            f"exec {_q(layout.python)} -m lorarun.image.instance.agent --job-dir {_q(layout.root)}",
            cwd=layout.root,
            log_path=layout.agent_log,
        )
        self._record(run, lease_deadline=deadline)

    def _monitor(self, run: JobRun, transport: Transport, layout: RemoteLayout) -> JobMonitor:
        self._advance(run, "monitor")
        job_dir = self.store.job_dir(run.state.job_id)
        monitor = JobMonitor(transport, layout, run.job.spec.output_dir, job_dir / "events.jsonl", now=self.clock.now)
        started = self.clock.now()
        last_instance_check = started
        renewer = LeaseRenewer(
            window=self.options.lease_seconds, hard_deadline=self.hard_deadline, wall=self.clock.wall
        )
        view = TrainingView(run.job.total_steps, self.rental.offer.price_per_hour, self.max_cost)
        with view:
            while True:
                done = self._monitor_round(monitor)
                spent = self._spent()
                view.update(monitor.progress, spent)
                if done:
                    break
                if (dead := monitor.agent_dead()) is not None:
                    self._agent_died(run, transport, monitor, dead)
                    break
                asked = self.store.take_stop_request(run.state.job_id)  # `lorarun down` from another terminal
                if asked and not self._stop_requested:
                    self._stop_requested = asked
                    err_console.print(
                        f"[yellow]{asked}: the engine saves a checkpoint, then outputs come home[/]", highlight=False
                    )
                    self._stop_engine(transport, layout, monitor)
                    break
                if (renewed := renewer.due(monitor.progress.marks)) is not None:
                    self._renew_lease(run, transport, layout, renewed)
                trained = monitor.progress.total_steps > 0 and monitor.progress.step >= monitor.progress.total_steps
                if (
                    self.spend and self.spend.over(self.max_cost) and not self._stop_requested and not trained
                ):  # a finished training's final save and samples are never cut
                    self._stop_requested = (
                        f"budget reached: {money(spent)} spent of max_cost {money(self.max_cost)}"
                        f" (keeping enough for the final pull and teardown); stopped cleanly"
                        f" with the last checkpoint"
                    )
                    err_console.print(f"[yellow]{self._stop_requested}[/]", highlight=False)
                    self._stop_engine(transport, layout, monitor)
                    break
                if self.clock.now() - last_instance_check > 30:
                    last_instance_check = self.clock.now()
                    self._check_instance_alive()
                self.clock.sleep(self.options.poll_interval)
        run.timings["training"] = self.clock.now() - started
        spp = monitor.seconds_per_step()
        if spp:
            run.timings["seconds_per_step"] = spp
        return monitor

    def _monitor_round(self, monitor: JobMonitor) -> bool:
        """One round of following the job; True once the engine is done. A lost SSH link, after the transport's
        own reconnect attempts, is explained by asking the provider whether the instance still exists."""
        from lorarun.sshlink.errors import ConnectionLost

        try:
            monitor.poll()
            return monitor.engine_done()
        except ConnectionLost:
            self._check_instance_alive()  # raises "vanished" when the provider no longer has it
            raise

    def _extend_lease_to_hard(self, run: JobRun) -> None:
        transport = self.rental.transport
        if transport is None or not run.state.remote_dir:
            return
        hard = self.hard_deadline
        try:
            if hard is None:
                raw = transport.read_bytes(run.state.remote_dir + "/status.json")
                hard = json.loads(raw).get("hard_deadline") if raw else None
            if hard is not None:
                self._renew_lease(run, transport, RemoteLayout(root=run.state.remote_dir, python=""), float(hard))
        except Exception:
            pass

    def _renew_lease(self, run: JobRun, transport: Transport, layout: RemoteLayout, deadline: float) -> None:
        """The job makes progress and we are attached: push the agent's working lease to `deadline` (#11.4)."""
        lease = layout.path(LEASE_FILE)
        transport.run(
            f"printf '%s' {deadline:.0f} > {_q(lease + '.tmp')} && mv {_q(lease + '.tmp')} {_q(lease)}",
            timeout=30,
            check=False,
        )
        self._record(run, lease_deadline=deadline)

    def _agent_died(self, run: JobRun, transport: Transport, monitor: JobMonitor, why: str) -> None:
        """The agent is gone (OOM killer, crashed container) and nothing on the instance will end the job: say so,
        end whatever engine is left (SIGTERM: it saves a checkpoint), and let `_finish` pull what exists; teardown
        follows as on every failure (#11.1)."""
        self._check_instance_alive()  # a vanished instance explains it better
        engine_pid = (monitor.agent_status() or {}).get("engine_pid")
        err_console.print(
            f"[red]the agent on instance {self.rental.instance.id} died ({why}); pulling what exists "
            f"and tearing down[/]",
            highlight=False,
        )
        if isinstance(engine_pid, int):
            transport.run(f"kill -TERM {engine_pid} 2>/dev/null || true", timeout=30, check=False)
        monitor.progress.reason = f"the agent on the instance died ({why})"
        monitor.progress.outcome = "failed"

    def _check_instance_alive(self) -> None:
        try:
            instance = self.provider.get(self.rental.instance.id)
        except ProviderError:
            return  # the API is flaky; the SSH link is the real test
        if instance is None or instance.status == InstanceStatus.TERMINATED:
            raise PipelineError(
                f"instance {self.rental.instance.id} vanished at {self.provider.name}; {self._pulled_so_far()}"
            )

    def _stop_engine(self, transport: Transport, layout: RemoteLayout, monitor: JobMonitor) -> None:
        """Ask the agent to stop (it forwards SIGTERM to the engine, which saves a checkpoint), then wait."""
        transport.run(f"kill -TERM $(cat {_q(layout.agent_pid)}) 2>/dev/null || true", timeout=30, check=False)

        def stopped() -> bool | None:
            monitor.poll()
            if monitor.engine_done():
                return True
            if (dead := monitor.agent_dead()) is not None:  # nobody there to stop: do not wait out stop_timeout
                err_console.print(f"[yellow]the agent is gone ({dead}); pulling what exists[/]", highlight=False)
                return True
            return None

        try:
            poll(
                stopped,
                what="the engine to save its checkpoint and stop",
                timeout=self.options.stop_timeout,
                interval=1.0,
                max_interval=3.0,
                clock=self.clock,
            )
        except PollTimeout as exc:
            err_console.print(f"[yellow]{exc}; pulling what exists[/]", highlight=False)

    def _finish(self, run: JobRun, transport: Transport, layout: RemoteLayout, monitor: JobMonitor) -> None:
        self._advance(run, "finish")
        started = self.clock.now()
        settled = monitor.settle()
        with pull_bar() as shown:
            home = bring_home(monitor, run.job.spec.output_dir, sleep=self.clock.sleep, progress=shown)
        run.timings["download"] = self.clock.now() - started
        verification = home.verification
        outcome = settled or ("stopped" if self._stop_requested else "failed")
        if not home.complete:
            # Never destroy what is not home yet (#11.5): the instance stays for its grace window, its agent armed.
            raise self._hold_outputs(run, home.problems)
        try:
            self._write_report(run, monitor, verification, outcome)
        except OSError as exc:  # every output is home and verified by now: only the report is missing
            if not is_local_write_error(exc):
                raise
            err_console.print(f"[yellow]report not written: {local_write_problem(exc, run.job.spec.output_dir)}[/]")
        # No `collected` marker here: the agent keeps its grace window and self-destroy armed until teardown has
        # destroyed the instance (and the agent with it). Told earlier, a destroy that fails would leave nothing on
        # the instance to end the billing (#15.5).
        if monitor.progress.refused:
            err_console.print(
                f"[yellow]refused {len(monitor.progress.refused)} manifest path(s) that would land "
                f"outside {run.job.spec.output_dir}: {', '.join(map(repr, monitor.progress.refused[:3]))}"
                f"[/]",
                highlight=False,
            )
        home.raise_if_bad_on_instance(run.job.spec.output_dir)  # the instance's copy is bad: not this laptop's disk
        verification.raise_if_bad()  # after the report: the user sees which file is wrong and why
        if outcome == "failed":
            from lorarun.runner.errors import EngineFailed

            raise EngineFailed(
                f"training failed: {monitor.progress.reason or 'see ' + str(run.job.spec.output_dir)}"
                f" (outputs saved so far are in {run.job.spec.output_dir})"
            )
        if outcome == "finished":
            self._record_calibration(run)
        run.outcome = outcome
        final = run.job.spec.output_dir / f"{run.job.spec.output.name}.safetensors"
        message = self._stop_requested or (f"LoRA saved to {final}" if final.exists() else "finished")
        self._record(run, message=message)

    def _hold_outputs(self, run: JobRun, problems) -> Exception:
        """Outputs not home because of this laptop: teardown keeps the instance; the error says what to fix."""
        self._held_for_pull = run
        grace = instance_grace_seconds(self.store.job_dir(run.state.job_id), self.options.grace_seconds)
        return not_home_error(
            problems, instance_id=self.rental.instance.id, grace_seconds=grace, job_id=run.state.job_id
        )

    def _write_report(self, run: JobRun, monitor: JobMonitor, verification, outcome: str) -> None:
        from lorarun.runner.run.report import write_report

        summary = {
            "job_id": run.state.job_id,
            "name": run.state.name,
            "provider": self.provider.name,
            "instance_id": self.rental.instance.id if self.rental.instance else None,
            "gpu": self._gpu_text(),
            "price_per_hour": self.rental.offer.price_per_hour,
            "timings": run.timings,
            "predicted_cost": run.predicted_cost,
            "actual_cost": self._spent(),
            "outcome": outcome,
            "stop_reason": self._stop_requested,
            "verification": dataclasses.asdict(verification) if dataclasses.is_dataclass(verification) else {},
        }
        write_report(run.job.spec.output_dir, summary, monitor.events)

    def _record_calibration(self, run: JobRun) -> None:
        try:
            from lorarun.runner.price.calibration import record_job
        except ImportError:
            return
        record_job(run=run, offer=self.rental.offer, provider=self.provider.name)

    # ---- leaving -----------------------------------------------------------------------------------------------
    def _spent(self) -> float:
        return self.spend.spent() if self.spend else 0.0

    def _on_interrupt(self, ask: bool) -> bool:
        """First Ctrl-C: stop (default: pull, destroy) or detach. A second Ctrl-C destroys at once."""
        if self.rental.instance is None:
            return False
        started_agent = any(r.state.phase in ("run", "monitor", "finish") for r in self.runs)
        if not started_agent:
            return False  # nothing is training: tear down now, there is nothing to save
        choice = "stop"
        if ask and self.options.interactive and not self.options.keep:
            from rich.prompt import Prompt

            err_console.print()
            try:
                choice = Prompt.ask(
                    "Interrupted. [bold]stop[/] (pull outputs, destroy the instance) or "
                    "[bold]detach[/] (leave it training; `lorarun attach` later)",
                    choices=["stop", "detach"],
                    default="stop",
                    console=err_console,
                )
            except (KeyboardInterrupt, EOFError):
                err_console.print("\nsecond interrupt: destroying the instance now")
                return False
        if choice == "detach":
            run = next(r for r in self.runs if r.outcome is None)
            self._extend_lease_to_hard(run)  # left training on purpose: only the budget's hard deadline applies
            self._record(run, message="detached by the user")
            lease = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.state.lease_deadline or 0))
            err_console.print(
                f"detached: instance {self.rental.instance.id} keeps training; "
                f"`lorarun attach {run.state.job_id}` to follow it, `lorarun down {run.state.job_id}` "
                f"to stop it. It destroys itself after its lease ({lease}) if nobody comes back.",
                highlight=False,
            )
            return True
        try:
            self._graceful_stop()
        except KeyboardInterrupt:
            err_console.print("\nsecond interrupt: destroying the instance now")
        return False

    def _graceful_stop(self, reason: str = "stopped by the user (Ctrl-C)") -> None:
        run = next((r for r in self.runs if r.outcome is None), None)
        if run is None or self.rental.transport is None or run.state.remote_dir is None:
            return
        err_console.print("stopping: the engine saves a checkpoint, then outputs come home")
        self._stop_requested = reason
        layout = RemoteLayout.resolve(self.rental.transport, run.state.job_id)
        monitor = JobMonitor(
            self.rental.transport,
            layout,
            run.job.spec.output_dir,
            self.store.job_dir(run.state.job_id) / "events.jsonl",
            now=self.clock.now,
        )
        self._stop_engine(self.rental.transport, layout, monitor)
        monitor.pull_outputs()
        run.outcome = "stopped"
        self._record(run, message=self._stop_requested)

    def _interrupted_message(self) -> str:
        return f"interrupted; {self._pulled_so_far()}"

    def _pulled_so_far(self) -> str:
        return "; ".join(
            fault_messages.pulled_so_far(self.store.job_dir(r.state.job_id), r.job.spec.output_dir) for r in self.runs
        )

    def _rented_seconds(self) -> float:
        return self.clock.wall() - self.rental.started_at if self.rental.started_at else 0.0

    def _teardown_guarded(self) -> None:
        """Teardown must finish even if the user presses Ctrl-C again while it runs."""
        for _ in range(3):
            try:
                self._teardown()
                return
            except KeyboardInterrupt:
                err_console.print(
                    "teardown in progress; press Ctrl-C again only if you will destroy the instance yourself"
                )
                continue

    def _teardown(self) -> None:
        for run in self.runs:
            if not run.state.is_final:
                self._advance(run, "teardown", run.state.message)
        if self._held_for_pull is not None and self.rental.instance is not None:
            self._hold_for_pull(self._held_for_pull)
            return
        if self.options.keep and self.rental.instance is not None:
            self._release_agents()  # kept on purpose: its agent must not destroy it after the grace window
        if self.rental.transport is not None:
            try:
                self.rental.transport.close()
            except Exception:
                pass
        instance = self.rental.instance
        if instance is None:
            for run in self.runs:
                self._finalize(run, destroyed=True)
            return
        if self.options.keep:
            hard = (
                f"; it destroys itself at its hard deadline "
                f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(self.hard_deadline))}"
                if self.hard_deadline
                else ""
            )
            err_console.print(
                f"[yellow]--keep: instance {instance.id} on {self.provider.name} is still up and "
                f"billing {money(self.rental.offer.price_per_hour)}/h{hard}. Kill it with: "
                f"{self.provider.kill_hint(instance.id)}[/]",
                highlight=False,
            )
            for run in self.runs:
                self._record(run, phase="kept", message=f"instance {instance.id} kept on purpose")
            return
        result = destroy_and_confirm(self.provider, instance.id, clock=self.clock)
        self.rental.teardown = result
        report(result)
        for run in self.runs:
            self._finalize(
                run, destroyed=result.confirmed, teardown_message=None if result.confirmed else result.message
            )

    def _hold_for_pull(self, held: JobRun) -> None:
        """Outputs are still on the instance and could not come home: keep it (said loudly, never silently); its
        agent destroys it after the grace window unless `lorarun attach` finishes the pull first."""
        instance = self.rental.instance
        if self.rental.transport is not None:
            try:
                self.rental.transport.close()
            except Exception:
                pass
        grace = instance_grace_seconds(self.store.job_dir(held.state.job_id), self.options.grace_seconds)
        until = time.strftime("%H:%M:%S", time.localtime(self.clock.wall() + grace))
        err_console.print(
            f"[bold yellow]instance {instance.id} on {self.provider.name} is kept until about {until} "
            f"(billing {money(self.rental.offer.price_per_hour)}/h) because outputs are not home yet; "
            f"`lorarun attach {held.state.job_id}` finishes the pull and destroys it, or it destroys "
            f"itself after that. Kill it now (losing those outputs): "
            f"{self.provider.kill_hint(instance.id)}[/]",
            highlight=False,
        )
        for run in self.runs:
            self._record(
                run, message=f"outputs not home; instance {instance.id} kept for the pull: {run.state.message}"[:500]
            )

    def _release_agents(self) -> None:
        """`--keep`: tell each job's agent the instance is kept, so it exits instead of self-destroying (the
        watchdog still ends it at the hard deadline, and the message says so)."""
        for run in self.runs:
            if self.rental.transport is None or not run.state.remote_dir:
                continue
            try:
                self.rental.transport.run(f"touch {_q(run.state.remote_dir + '/kept')}", timeout=30, check=False)
            except Exception:
                pass

    def _finalize(self, run: JobRun, *, destroyed: bool, teardown_message: str | None = None) -> None:
        phase = "done" if run.outcome in ("finished", "stopped") else "failed"
        message = run.state.message if not teardown_message else f"{run.state.message} | {teardown_message}"
        self._record(run, instance_destroyed=destroyed, message=message)
        self._advance(run, phase, message)

    def _gpu_text(self) -> str:
        offer = self.rental.offer
        return f"{offer.gpu_count}× {offer.gpu_name}" if offer.gpu_count > 1 else offer.gpu_name


def _new_state(store: JobStore, job: ValidatedJob, provider_name: str, predicted_cost: float | None) -> JobState:
    from lorarun.runner.state import new_job_id

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


class TerminateRequested(KeyboardInterrupt):
    """SIGTERM: stop cleanly without asking (a service manager or `kill` sent it, not a person)."""


def _sigterm_as_interrupt(signum, frame):
    raise TerminateRequested


def write_upload_manifest(job_dir: Path, uploaded: dict) -> None:
    """What left the laptop for this job, file by file (relative path, sha256, size), for the user to audit."""
    import json

    data = {
        part: [{"path": rel, "sha256": sha, "size": size} for rel, sha, size in files]
        for part, files in uploaded.items()
    }
    (job_dir / "upload_manifest.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _job_public_key(ssh_dir: Path, job_id: str, provider_name: str) -> str:
    """A fresh ed25519 key per job (the local provider needs none)."""
    if provider_name == "local":
        return ""
    from lorarun.runner.remote.keys import write_job_keypair

    return write_job_keypair(ssh_dir, job_id)


def _q(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"
