"""Seconds per training step and the fixed costs around it: shipped figures, measured ones, and a scaling rule.

Where the numbers come from, in the order a lookup prefers them:
1. measured: every finished job appends one line to `$LORARUN_HOME/calibration.jsonl` (`record_measurement`);
   a later job with the same GPU, model family, resolution, batch and options uses the median of the last three.
2. shipped: `calibration_table.json` beside this file, each row with its `source` (this engine's H100 baseline,
   or a public report from reference/engine.md §1).
3. scaled: from the closest measured or shipped row by a two-part rule — a fixed per-step overhead (kernel
   launches, Python; the same on an H100 and an L40S per engine.md §0) plus FLOPs / (GPU bf16 peak × efficiency).
   The result says "scaled from <row>" so nobody mistakes it for a measurement.

`Calibration` is immutable data with pure lookups. Loading (the shipped table, the measurements) is in
calibration_load.py, recording a finished job in calibration_record.py, GPU names' canonical keys in gpu_keys.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from lorarun.runner.price.gpu_keys import gpu_key

RECENT = 3  # measured values are the median of this many latest matching runs: one odd run does not dominate


@dataclass(frozen=True)
class StepOptions:
    """The training options that change the time of a step."""

    gradient_checkpointing: bool = False
    trains_text_encoder: bool = False
    mixed_precision: str = "bf16"

    @property
    def key(self) -> tuple[bool, bool, bool]:
        # fp16 and bf16 run at the same speed; only full fp32 ("no") differs.
        return (self.gradient_checkpointing, self.trains_text_encoder, self.mixed_precision == "no")


@dataclass(frozen=True)
class StepRow:
    gpu: str  # canonical key, see gpu_key()
    family: str
    resolution: tuple[int, int]
    batch: int
    options: StepOptions
    seconds_per_step: float
    source: str
    measured: bool = False
    gpu_count: int = 1


@dataclass(frozen=True)
class StepTime:
    seconds: float
    source: str
    kind: str  # "measured" | "shipped" | "scaled"


@dataclass(frozen=True)
class FamilyCosts:
    train_tflop_per_sample: float
    reference_resolution: tuple[int, int]
    checkpointing_flops: float
    load_s: float
    cache_s_per_image: float
    model_gb: float
    source: str


@dataclass(frozen=True)
class ProviderCosts:
    boot_s: float
    pulls_image: bool
    source: str


@dataclass(frozen=True)
class Factors:
    efficiency: float
    checkpointing_overhead: float
    text_encoder_overhead: float
    fp32_compute: float
    multi_gpu_step: float
    resolution_exponent: float
    min_overhead_share: float


@dataclass(frozen=True)
class Transfer:
    image_gb: float
    laptop_up_mbps: float
    laptop_down_mbps: float
    network_efficiency: float
    image_extract_s_per_gb: float
    slow_network_mbps: float


@dataclass(frozen=True)
class Sampling:
    denoise_step_share: float
    per_image_s: float


@dataclass(frozen=True)
class Measured:
    """What the pipeline measured for one finished job. None = not measured (the estimate keeps its guess)."""

    boot_s: float | None = None  # create() → SSH answers, including any image pull that happens before it
    image_pull_s: float | None = None  # that pull on its own, where the provider reports it
    model_download_s: float | None = None
    upload_s: float | None = None
    upload_bytes: int | None = None
    train_s: float | None = None  # the engine's training loop only
    training_wall_s: float | None = None  # the whole engine run: load + caching + training loop + sampling
    steps_done: int | None = None
    sampling_s: float | None = None
    download_s: float | None = None
    download_bytes: int | None = None
    total_s: float | None = None  # create() → destroy confirmed
    cost: float | None = None  # from the instance's real price and running time
    install_s: float | None = None  # `image: stock`: pip-installing lorarun on the instance
    startup_s: float | None = None  # our image's own start-up: container started → engine importable (its log)

    @property
    def seconds_per_step(self) -> float | None:
        if self.train_s is None or not self.steps_done:
            return None
        return self.train_s / self.steps_done


@dataclass(frozen=True)
class Measurement:
    """One line of calibration.jsonl: what was predicted and what happened, for one job."""

    recorded_at: float
    job_id: str
    provider: str
    gpu_name: str
    gpu: str
    gpu_count: int
    family: str
    resolution: tuple[int, int]
    batch: int
    options: StepOptions
    steps: int
    measured: Measured
    predicted_phases: tuple[tuple[str, float], ...] = ()
    predicted_seconds_per_step: float | None = None
    predicted_total_s: float | None = None
    predicted_cost: float | None = None

    def predicted(self, phase: str) -> float | None:
        return dict(self.predicted_phases).get(phase)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(
            recorded_at=float(data["recorded_at"]),
            job_id=str(data["job_id"]),
            provider=str(data["provider"]),
            gpu_name=str(data["gpu_name"]),
            gpu=str(data["gpu"]),
            gpu_count=int(data.get("gpu_count", 1)),
            family=str(data["family"]),
            resolution=reso(data["resolution"]),
            batch=int(data["batch"]),
            options=StepOptions(**data.get("options", {})),
            steps=int(data.get("steps", 0)),
            measured=Measured(**data.get("measured", {})),
            predicted_phases=tuple((str(k), float(v)) for k, v in data.get("predicted_phases", ())),
            predicted_seconds_per_step=data.get("predicted_seconds_per_step"),
            predicted_total_s=data.get("predicted_total_s"),
            predicted_cost=data.get("predicted_cost"),
        )


@dataclass(frozen=True)
class Calibration:
    gpus: tuple[tuple[str, float, str], ...]  # (key, bf16 TFLOP/s, source)
    families: tuple[tuple[str, FamilyCosts], ...]
    providers: tuple[tuple[str, ProviderCosts], ...]
    factors: Factors
    transfer: Transfer
    sampling: Sampling
    shipped: tuple[StepRow, ...]
    measurements: tuple[Measurement, ...] = field(default=())  # oldest first

    # -- lookups ------------------------------------------------------------------------------------------------
    def tflops(self, gpu: str) -> tuple[float, str]:
        table = {k: (v, s) for k, v, s in self.gpus}
        return table.get(gpu) or table["unknown"]

    def family(self, family: str) -> FamilyCosts:
        table = dict(self.families)
        if family not in table:
            raise ValueError(f"no calibration for model family {family!r}; known: {', '.join(table)}")
        return table[family]

    def provider(self, name: str) -> ProviderCosts:
        # Test fakes and future adapters default to the marketplace figures: erring towards a slow boot.
        return dict(self.providers).get(name) or dict(self.providers)["vastai"]

    def measured_rows(self) -> list[StepRow]:
        rows = []
        for m in reversed(self.measurements):  # newest first
            sps = m.measured.seconds_per_step
            if sps is None:
                continue
            when = time.strftime("%Y-%m-%d", time.localtime(m.recorded_at))
            rows.append(
                StepRow(
                    m.gpu,
                    m.family,
                    m.resolution,
                    m.batch,
                    m.options,
                    sps,
                    f"measured: job {m.job_id} on {when}",
                    measured=True,
                    gpu_count=m.gpu_count,
                )
            )
        return rows

    def seconds_per_step(
        self,
        gpu_name: str,
        family: str,
        resolution: tuple[int, int],
        batch: int,
        options: StepOptions,
        gpu_count: int = 1,
    ) -> StepTime:
        gpu = gpu_key(gpu_name)
        measured = self.measured_rows()
        same = [
            r
            for r in measured
            if _same_setting(r, gpu, family, resolution, batch, options) and r.gpu_count == gpu_count
        ][:RECENT]
        if same:
            seconds = statistics.median(r.seconds_per_step for r in same)
            runs = f"median of {len(same)} runs, latest " if len(same) > 1 else ""
            return StepTime(seconds, f"{runs}{same[0].source}", "measured")
        shipped = [r for r in self.shipped if _same_setting(r, gpu, family, resolution, batch, options)]
        if shipped and gpu_count == 1:
            return StepTime(shipped[0].seconds_per_step, shipped[0].source, "shipped")
        candidates = [r for r in measured if r.gpu_count == 1] + list(self.shipped)
        ref = self._reference(candidates, gpu, family, resolution, batch, options)
        seconds = self.scale(ref, gpu, resolution, batch, options)
        if gpu_count > 1:
            seconds *= self.factors.multi_gpu_step  # gradient all-reduce after every step
        what = f"{ref.gpu} {ref.family}@{ref.resolution[0]}x{ref.resolution[1]} bs{ref.batch}"
        return StepTime(seconds, f"scaled from {what} ({ref.source})", "scaled")

    def _reference(
        self, rows: list[StepRow], gpu: str, family: str, resolution: tuple[int, int], batch: int, options: StepOptions
    ) -> StepRow:
        same_family = [r for r in rows if r.family == family]
        if not same_family:
            raise ValueError(f"no calibration row for model family {family!r}")

        def distance(r: StepRow) -> tuple:
            # The same resolution first (a step's overhead depends on it through the kernels' shapes), then this
            # very setting measured on another GPU (what the user's jobs really cost beyond the arithmetic; without
            # it a measured GPU looks slower than the unmeasured ones and the next plan moves to them, sized by
            # the old guess), then the same GPU (its own overhead), measured over shipped, this engine's own
            # baseline over other trainers, then the closest options and batch.
            return (
                round(abs(math.log(r.resolution[0] * r.resolution[1] / (resolution[0] * resolution[1]))), 3),
                not (r.measured and r.batch == batch and r.options.key == options.key),
                r.gpu != gpu,
                not r.measured,
                "baselines.md" not in r.source,
                sum(a != b for a, b in zip(r.options.key, options.key)),
                abs(math.log(r.batch / batch)),
            )

        return min(same_family, key=distance)

    def compute_seconds(
        self, gpu: str, family: str, resolution: tuple[int, int], batch: int, options: StepOptions
    ) -> float:
        """The arithmetic part of a step: FLOPs / (peak × efficiency)."""
        fam = self.family(family)
        ref_pixels = fam.reference_resolution[0] * fam.reference_resolution[1]
        tflop = (
            fam.train_tflop_per_sample
            * (resolution[0] * resolution[1] / ref_pixels) ** self.factors.resolution_exponent
        )
        if options.gradient_checkpointing:
            tflop *= fam.checkpointing_flops
        seconds = tflop * batch / (self.tflops(gpu)[0] * self.factors.efficiency)
        if options.mixed_precision == "no":
            seconds *= self.factors.fp32_compute
        return seconds

    def overhead_factor(self, options: StepOptions) -> float:
        factor = 1.0
        if options.gradient_checkpointing:
            factor *= self.factors.checkpointing_overhead
        if options.trains_text_encoder:
            factor *= self.factors.text_encoder_overhead
        return factor

    def scale(self, ref: StepRow, gpu: str, resolution: tuple[int, int], batch: int, options: StepOptions) -> float:
        ref_compute = self.compute_seconds(ref.gpu, ref.family, ref.resolution, ref.batch, ref.options)
        # The overhead is what the reference step spent beyond its arithmetic; a floor keeps some when a
        # reference looks fully compute-bound (its GPU figure may be optimistic).
        overhead = max(ref.seconds_per_step - ref_compute, self.factors.min_overhead_share * ref.seconds_per_step)
        overhead *= self.overhead_factor(options) / self.overhead_factor(ref.options)
        return overhead + self.compute_seconds(gpu, ref.family, resolution, batch, options)

    def boot_seconds(self, provider: str, gpu_name: str) -> tuple[float, str]:
        """Seconds from create() to SSH, *excluding* the image pull (added per offer from its bandwidth).

        A measured boot includes the pull where the provider pulls before SSH; the pull that was predicted for
        that job is taken off, so what is learned is the provider's own start-up time.
        """
        gpu = gpu_key(gpu_name)
        mine = [m for m in reversed(self.measurements) if m.provider == provider and m.measured.boot_s is not None]
        for pool, what in (([m for m in mine if m.gpu == gpu], f"{provider} {gpu}"), (mine, provider)):
            pool = pool[:RECENT]
            if pool:
                learned = [max(b - _pull_part(m), 0.1 * b) for m in pool if (b := m.measured.boot_s) is not None]
                return statistics.median(learned), f"measured ({what}, {len(pool)} job(s))"
        p = self.provider(provider)
        return p.boot_s, p.source

    def install_seconds(self, provider: str, assumed: float) -> tuple[float, str]:
        """Seconds to pip-install lorarun on `provider`'s stock image: the median of the latest measured installs
        there (the pip cache and the provider's network decide it), else `assumed`."""
        learned = [
            m.measured.install_s
            for m in reversed(self.measurements)
            if m.provider == provider and m.measured.install_s is not None
        ][:RECENT]
        if learned:
            return statistics.median(learned), f"measured ({provider}, {len(learned)} job(s))"
        return assumed, "assumed"

    def prepare_seconds(self, family: str, gpu_name: str) -> tuple[float, str] | None:
        """Seconds the engine spends outside its step loop and sampling (start, model load, caching).

        Learned as a measured job's engine wall time minus its steps and its predicted sampling; None when no
        job measured it (the caller then uses the shipped load time plus caching per image)."""
        gpu = gpu_key(gpu_name)
        learned = []
        for m in reversed(self.measurements):
            if m.family != family or m.gpu != gpu or m.measured.training_wall_s is None or m.measured.train_s is None:
                continue
            rest = m.measured.training_wall_s - m.measured.train_s - (m.predicted("sampling") or 0.0)
            learned.append(max(rest, 0.0))
            if len(learned) == RECENT:
                break
        if learned:
            return statistics.median(learned), f"measured ({family} on {gpu}, {len(learned)} job(s))"
        return None

    def link_rate(self, provider: str, direction: str) -> float | None:
        """Measured bytes/s between this laptop and `provider` machines ("up" or "down"), if any job measured it."""
        rates = []
        for m in reversed(self.measurements):
            seconds = m.measured.upload_s if direction == "up" else m.measured.download_s
            size = m.measured.upload_bytes if direction == "up" else m.measured.download_bytes
            # Tiny transfers measure latency, not bandwidth: only a few MB or more say something about the link.
            if m.provider == provider and seconds and size and size >= 4_000_000:
                rates.append(size / seconds)
            if len(rates) == RECENT:
                break
        return statistics.median(rates) if rates else None

    def accuracy(self, last: int = 5) -> Accuracy | None:
        rows = [m for m in self.measurements if m.predicted_total_s and m.measured.total_s][-last:]
        return Accuracy(tuple(rows)) if rows else None

    def with_measurements(self, measurements: tuple[Measurement, ...]) -> Calibration:
        return dataclasses.replace(self, measurements=measurements)


@dataclass(frozen=True)
class Accuracy:
    """How far the last estimates were from what the jobs measured."""

    rows: tuple[Measurement, ...]

    def time_ratios(self) -> list[float]:
        # `accuracy()` keeps only rows with both times; the walrus says so to the type checker
        return [t / p for m in self.rows if (t := m.measured.total_s) and (p := m.predicted_total_s)]

    def step_ratios(self) -> list[float]:
        return [t / p for m in self.rows if (t := m.measured.seconds_per_step) and (p := m.predicted_seconds_per_step)]

    def text(self) -> str:
        def span(values: list[float]) -> str:
            lo, hi = min(values), max(values)
            return f"{lo:.2f}×" if abs(hi - lo) < 0.005 else f"{lo:.2f}×–{hi:.2f}×"

        n = len(self.rows)
        parts = [f"last {n} job(s) took {span(self.time_ratios())} the estimated time"]
        steps = self.step_ratios()
        if steps:
            parts.append(f"steps ran at {span(steps)} the estimated seconds per step")
        costs = [
            (m.predicted_cost, m.measured.cost) for m in self.rows if m.predicted_cost and m.measured.cost is not None
        ]
        if costs:
            parts.append(f"cost ${sum(c for _, c in costs):.2f} against ${sum(p for p, _ in costs):.2f} estimated")
        return "; ".join(parts)


# -- helpers ----------------------------------------------------------------------------------------------------
def _same_setting(
    r: StepRow, gpu: str, family: str, resolution: tuple[int, int], batch: int, options: StepOptions
) -> bool:
    return (
        r.gpu == gpu
        and r.family == family
        and tuple(r.resolution) == tuple(resolution)
        and r.batch == batch
        and r.options.key == options.key
    )


def _pull_part(m: Measurement) -> float:
    if m.measured.image_pull_s is not None:
        return m.measured.image_pull_s
    return m.predicted("image_pull") or 0.0


def reso(value: Any) -> tuple[int, int]:
    if isinstance(value, (int, float)):
        return (int(value), int(value))
    w, h = value
    return (int(w), int(h))
