"""What a whole job will cost on each offer, and which offers cannot run it. Pure functions.

    total $ = price/h × (boot + image pull + model download + upload + prepare + steps × s/step + sampling
                         + output download) + storage where it bills on top

Users compare dollars per LoRA, not dollars per hour: a $0.70/h H100 can beat a $0.30/h 3090 once boot,
transfers and step time are counted. Every time comes with where it came from (`calibration.py`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from lorarun.image.base_cuda import BASE_CUDA
from lorarun.image.memory import suggest_fit
from lorarun.provider_adapters.base import Offer
from lorarun.runner.job.spec import Resources
from lorarun.runner.price.calibration import Calibration, StepOptions
from lorarun.runner.price.caption_time import caption_seconds
from lorarun.runner.price.gpu_keys import gpu_key
from lorarun.runner.run import stock

MIN_CUDA = BASE_CUDA  # the image's CUDA runtime (image/base_cuda.py): older drivers cannot start it
UNKNOWN_LINK_MBPS = 200.0  # an offer that does not state its bandwidth: a middling datacenter link
LOCAL_COPY_BYTES_PER_S = 200e6  # the `local` provider copies files on this machine's disk
HOURS_PER_MONTH = 730.0  # storage is priced per GB-month
SAMPLE_PNG_BYTES_PER_PIXEL = 1.5  # a PNG of a photo-like sample


@dataclass(frozen=True)
class EstimateInputs:
    """Everything about the job that the estimate needs, taken once from the spec and the dataset scan."""

    steps: int
    family: str  # calibration family: sd15 | sdxl | flux | tiny (the built-in test models)
    resolution: tuple[int, int]
    batch_size: int
    options: StepOptions
    network_dim: int
    num_images: int  # distinct images: latents are cached once per image, not per repeat
    dataset_bytes: int
    model_download_gb: float  # what the instance downloads from the hub (0 for built-in or uploaded models)
    model_upload_bytes: int  # a local checkpoint the laptop uploads with the dataset
    image_gb: float  # the Docker image, compressed
    sample_images: int
    sample_steps: int
    output_bytes: int  # LoRA checkpoints and samples brought home
    vram_needed_gb: float
    gpu_count: int = 1
    min_cuda: float = MIN_CUDA
    disk_gb: float = 40.0
    model_ref: str = ""  # the base model as the job names it: jobs of a batch with the same one download it once
    quantization: str = "bf16"  # Flux's base weights: bf16 | int8 | nf4 (decides VRAM and system RAM)
    ram_needed_gb: float = 0.0  # system memory loading the base needs; 0 = no requirement
    install_s: float = 0.0  # `image: stock`: lorarun is pip-installed on the instance first
    caption_s: float = 0.0  # `dataset.captions: auto|only`: captioning on the instance (price/caption_time.py)


@dataclass(frozen=True)
class Phases:
    """Predicted seconds of each phase. Grouped as the table shows them: start-up, transfer, training."""

    boot: float
    image_pull: float
    model_download: float
    upload: float
    prepare: float  # load the model, cache latents and text embeddings
    train: float
    sampling: float
    download: float
    install: float = 0.0  # the stock path: pip-installing lorarun on the provider's stock image (runner/run/stock.py)

    @property
    def startup(self) -> float:
        return self.boot + self.image_pull + self.model_download + self.install

    @property
    def transfer(self) -> float:
        return self.upload + self.download

    @property
    def training(self) -> float:
        return self.prepare + self.train + self.sampling

    @property
    def total(self) -> float:
        return self.startup + self.transfer + self.training

    def items(self) -> tuple[tuple[str, float], ...]:
        return tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))


@dataclass(frozen=True)
class Estimate:
    offer: Offer
    phases: Phases
    seconds_per_step: float
    step_source: str  # where seconds_per_step came from
    step_kind: str  # measured | shipped | scaled
    boot_source: str
    compute_cost: float  # price/h × running time
    storage_cost: float  # billed on top where the provider does so
    vram_needed_gb: float
    excluded: str | None = None  # why this offer cannot or may not run the job; None = it fits
    per_job_costs: tuple[float, ...] = ()  # for a batch on one rental: each job's share of total_cost
    # Interruptible offers: the expected re-rent and lost-work cost (runner/price/interruptible.py)
    expected_extra_cost: float = 0.0
    interruption_rate: float | None = None  # interruptions per hour the estimate assumed
    interruption_source: str = ""

    @property
    def total_seconds(self) -> float:
        return self.phases.total

    @property
    def total_cost(self) -> float:
        return self.compute_cost + self.storage_cost

    @property
    def expected_cost(self) -> float:
        """What the job is expected to cost: the total, plus what interruptions are expected to add."""
        return self.total_cost + self.expected_extra_cost

    @property
    def fits(self) -> bool:
        return self.excluded is None

    def to_dict(self) -> dict[str, Any]:
        o = self.offer
        return {
            "provider": o.provider,
            "offer_id": o.id,
            "gpu": o.gpu_name,
            "gpu_count": o.gpu_count,
            "vram_gb": o.vram_gb,
            "price_per_hour": o.price_per_hour,
            "reliability": o.reliability,
            "inet_down_mbps": o.inet_down_mbps,
            "location": o.location,
            "interruptible": o.interruptible,
            "seconds": {
                **dict(self.phases.items()),
                "startup": self.phases.startup,
                "transfer": self.phases.transfer,
                "training": self.phases.training,
                "total": self.total_seconds,
            },
            "minutes_total": round(self.total_seconds / 60, 2),
            "seconds_per_step": self.seconds_per_step,
            "step_source": self.step_source,
            "step_kind": self.step_kind,
            "boot_source": self.boot_source,
            "compute_cost": round(self.compute_cost, 4),
            "storage_cost": round(self.storage_cost, 4),
            "total_cost": round(self.total_cost, 4),
            "expected_total_cost": round(self.expected_cost, 4),
            "interruption_rate_per_hour": self.interruption_rate,
            "interruption_rate_source": self.interruption_source or None,
            "vram_needed_gb": self.vram_needed_gb,
            "fits": self.fits,
            "excluded": self.excluded,
            "per_job_costs": list(self.per_job_costs),
        }


# -- inputs -----------------------------------------------------------------------------------------------------
def is_cpu_offer(offer: Offer) -> bool:
    return offer.gpu_count == 0 or gpu_key(offer.gpu_name) == "cpu"


def estimate_offer(
    inputs: EstimateInputs, offer: Offer, calibration: Calibration, resources: Resources | None = None
) -> Estimate:
    """Predicted time and cost of the whole job on `offer`; `excluded` says why it may not be chosen.

    Without `resources` only the job's own needs (memory, CUDA, network) exclude an offer.
    """
    cal = calibration
    cpu = is_cpu_offer(offer)
    gpu_name = "cpu" if cpu else offer.gpu_name  # a machine without a GPU trains on its CPU, whatever it is called
    gpus_used = 1 if cpu else max(1, min(offer.gpu_count, inputs.gpu_count))
    step = cal.seconds_per_step(
        gpu_name, inputs.family, inputs.resolution, inputs.batch_size, inputs.options, gpus_used
    )
    # With data parallelism each GPU takes a batch per step, so the run has 1/n the steps (kohya does the same).
    train_s = math.ceil(inputs.steps / gpus_used) * step.seconds
    provider = cal.provider(offer.provider)
    local = offer.provider == "local"
    down_bps = _bytes_per_s(offer.inet_down_mbps, cal.transfer.network_efficiency)
    image_pull = 0.0
    if provider.pulls_image and not offer.has_image_cached:
        image_pull = inputs.image_gb * 1e9 / down_bps + inputs.image_gb * cal.transfer.image_extract_s_per_gb
    model_download = inputs.model_download_gb * 1e9 / down_bps
    boot, boot_source = cal.boot_seconds(offer.provider, gpu_name)
    up_bytes = inputs.dataset_bytes + inputs.model_upload_bytes
    upload = up_bytes / _link(cal, offer, "up", local)
    download = inputs.output_bytes / _link(cal, offer, "down", local)
    fam = cal.family(inputs.family)
    learned = cal.prepare_seconds(inputs.family, gpu_name)
    prepare = learned[0] if learned else fam.load_s + fam.cache_s_per_image * inputs.num_images
    prepare += caption_seconds(inputs, cpu)  # captions made before the dataset is read
    sampling = 0.0
    if inputs.sample_images:
        # Sampling runs the denoiser forward only, at batch 1 (two with CFG): about half a training step each.
        bs1 = cal.seconds_per_step(
            gpu_name, inputs.family, inputs.resolution, 1, StepOptions(mixed_precision=inputs.options.mixed_precision)
        ).seconds
        sampling = inputs.sample_images * (
            inputs.sample_steps * bs1 * cal.sampling.denoise_step_share + cal.sampling.per_image_s
        )
    phases = Phases(
        boot=boot,
        image_pull=image_pull,
        model_download=model_download,
        upload=upload,
        prepare=prepare,
        train=train_s,
        sampling=sampling,
        download=download,
        install=(
            cal.install_seconds(offer.provider, inputs.install_s)[0]
            if inputs.install_s and offer.provider in stock.STOCK_IMAGES
            else 0.0
        ),
    )
    compute_cost, storage_cost = _costs(offer, phases.total, inputs.disk_gb)
    estimate = Estimate(
        offer=offer,
        phases=phases,
        seconds_per_step=step.seconds,
        step_source=step.source,
        step_kind=step.kind,
        boot_source=boot_source,
        compute_cost=compute_cost,
        storage_cost=storage_cost,
        vram_needed_gb=inputs.vram_needed_gb,
        per_job_costs=(compute_cost + storage_cost,),
    )
    reasons = exclusion_reasons(inputs, estimate, cal.transfer.slow_network_mbps, provider.pulls_image, resources)
    return dataclasses.replace(estimate, excluded="; ".join(reasons) or None)


def _costs(offer: Offer, seconds: float, disk_gb: float) -> tuple[float, float]:
    hours = seconds / 3600
    return offer.price_per_hour * hours, offer.storage_price_gb_month * disk_gb * hours / HOURS_PER_MONTH


def estimate_batch_offer(
    inputs_list: list[EstimateInputs], offer: Offer, calibration: Calibration, resources: Resources | None = None
) -> Estimate:
    """Several jobs one after another on one rental (`submit a.yaml b.yaml`): the machine boots and pulls the
    image once, a base model shared by jobs is downloaded once; everything else adds up. `per_job_costs` splits
    the total, the shared start-up charged to the first job. `max_cost` applies to the batch's total."""
    if len(inputs_list) == 1:
        return estimate_offer(inputs_list[0], offer, calibration, resources)
    no_cap = dataclasses.replace(resources, max_cost=None) if resources else None
    singles = [estimate_offer(i, offer, calibration, no_cap) for i in inputs_list]
    seen_models: set[str] = set()
    job_phases: list[Phases] = []
    for n, (inputs, e) in enumerate(zip(inputs_list, singles)):
        shared_model = inputs.model_ref in seen_models
        seen_models.add(inputs.model_ref)
        job_phases.append(
            dataclasses.replace(
                e.phases,
                boot=e.phases.boot if n == 0 else 0.0,
                image_pull=e.phases.image_pull if n == 0 else 0.0,
                install=e.phases.install if n == 0 else 0.0,  # later jobs of a batch install from the pip cache
                model_download=0.0 if shared_model else e.phases.model_download,
            )
        )
    phases = Phases(**{f.name: sum(getattr(p, f.name) for p in job_phases) for f in dataclasses.fields(Phases)})
    disk = max(i.disk_gb for i in inputs_list)
    per_job = tuple(sum(_costs(offer, p.total, disk)) for p in job_phases)
    compute_cost, storage_cost = _costs(offer, phases.total, disk)
    steps = sum(i.steps for i in inputs_list)
    reasons = [f"job {n + 1}: {e.excluded}" for n, e in enumerate(singles) if e.excluded]
    if resources and resources.max_cost is not None and compute_cost + storage_cost > resources.max_cost:
        reasons.append(f"predicted ${compute_cost + storage_cost:.2f} is over max_cost ${resources.max_cost:.2f}")
    first = singles[0]
    return Estimate(
        offer=offer,
        phases=phases,
        seconds_per_step=phases.train / max(steps, 1),
        step_source="; ".join(dict.fromkeys(e.step_source for e in singles)),
        step_kind=first.step_kind if all(e.step_kind == first.step_kind for e in singles) else "mixed",
        boot_source=first.boot_source,
        compute_cost=compute_cost,
        storage_cost=storage_cost,
        vram_needed_gb=max(i.vram_needed_gb for i in inputs_list),
        excluded="; ".join(reasons) or None,
        per_job_costs=per_job,
    )


def exclusion_reasons(
    inputs: EstimateInputs, estimate: Estimate, slow_network_mbps: float, pulls_image: bool, resources: Resources | None
) -> list[str]:
    """Every reason `estimate.offer` may not run this job, most fundamental first."""
    o, r = estimate.offer, resources
    reasons: list[str] = []
    cpu = is_cpu_offer(o)
    # A CPU "offer" (the local provider without a GPU) trains in system memory: no VRAM limit applies.
    if not cpu and o.vram_gb < inputs.vram_needed_gb:
        advice = suggest_fit(
            inputs.family,
            inputs.resolution,
            inputs.batch_size,
            inputs.network_dim,
            inputs.options.gradient_checkpointing,
            inputs.options.trains_text_encoder,
            o.vram_gb,
            inputs.options.mixed_precision,
            inputs.quantization,
        ).partition("; to fit: ")[2]
        reasons.append(
            f"too little VRAM for this job (needs ~{inputs.vram_needed_gb:.1f} GB, "
            f"{o.gpu_name} has {o.vram_gb:.1f} GB" + (f" — to fit: {advice}" if advice else "") + ")"
        )
    if o.ram_gb is not None and inputs.ram_needed_gb and o.ram_gb < inputs.ram_needed_gb:
        what = f"the {inputs.quantization} Flux base" if inputs.family == "flux" else "the base model"
        reasons.append(
            f"too little system RAM to load {what} (needs ~{inputs.ram_needed_gb:.0f} GB, the machine "
            f"has {o.ram_gb:.0f} GB"
            + ("; quantising passes the bf16 weights through host memory" if inputs.quantization != "bf16" else "")
            + ")"
        )
    if o.cuda_version is not None and o.cuda_version < inputs.min_cuda:
        reasons.append(f"CUDA {o.cuda_version:g} too old (the image needs {inputs.min_cuda:g}+)")
    floor = max(slow_network_mbps if pulls_image else 0.0, r.min_inet_down_mbps if r else 0.0)
    if o.inet_down_mbps is not None and floor and o.inet_down_mbps < floor:
        reasons.append(f"slow network ({o.inet_down_mbps:.0f} Mb/s down, needs {floor:.0f}+)")
    if r is None:
        return reasons
    # `gpus` chooses among rented cards; this machine is what it is (provider local), so the list does not apply
    if r.gpus and o.provider != "local" and gpu_key(o.gpu_name) not in {gpu_key(g) for g in r.gpus}:
        reasons.append(f"{o.gpu_name} is not one of the GPUs asked for ({', '.join(r.gpus)}){r.origin('gpus')}")
    if not cpu and o.gpu_count < r.gpu_count:
        reasons.append(f"{o.gpu_count} GPU(s), the job asks for {r.gpu_count}{r.origin('gpu_count')}")
    if not cpu and r.min_vram_gb and o.vram_gb < r.min_vram_gb:
        reasons.append(f"{o.vram_gb:.1f} GB VRAM is under min_vram_gb {r.min_vram_gb:g}")
    if r.max_price_per_hour is not None and o.price_per_hour > r.max_price_per_hour:
        reasons.append(
            f"over max $/h (${o.price_per_hour:.3f}/h > ${r.max_price_per_hour:.3f}/h){r.origin('max_price_per_hour')}"
        )
    if r.min_reliability and o.reliability is not None and o.reliability < r.min_reliability:
        reasons.append(f"reliability {o.reliability:.3f} below {r.min_reliability:g}")
    if o.interruptible and r.interruptible == "never":
        reasons.append("interruptible, and the job does not allow interruptible machines")
    if r.secure_cloud_only and o.secure_cloud is False:
        reasons.append("not secure cloud")
    if r.max_cost is not None and estimate.total_cost > r.max_cost:
        reasons.append(f"predicted ${estimate.total_cost:.2f} is over max_cost ${r.max_cost:.2f}{r.origin('max_cost')}")
    return reasons


def rank(
    inputs: EstimateInputs, offers: list[Offer], calibration: Calibration, resources: Resources | None = None
) -> list[Estimate]:
    """All offers, estimated: those that fit first, cheapest total first (then fastest), then the excluded."""
    return _sorted([estimate_offer(inputs, o, calibration, resources) for o in offers])


def rank_batch(
    inputs_list: list[EstimateInputs], offers: list[Offer], calibration: Calibration, resources: Resources | None = None
) -> list[Estimate]:
    """`rank` for several jobs sharing one rental (see `estimate_batch_offer`)."""
    return _sorted([estimate_batch_offer(inputs_list, o, calibration, resources) for o in offers])


def _sorted(estimates: list[Estimate]) -> list[Estimate]:
    return sorted(estimates, key=lambda e: (not e.fits, round(e.total_cost, 6), e.total_seconds, e.offer.id))


def _bytes_per_s(mbps: float | None, efficiency: float) -> float:
    return (mbps if mbps and mbps > 0 else UNKNOWN_LINK_MBPS) * 1e6 / 8 * efficiency


def _link(cal: Calibration, offer: Offer, direction: str, local: bool) -> float:
    """Bytes/s between the laptop and the offer's machine: measured if a job measured it, else the slower of
    the laptop's assumed link and the machine's stated one."""
    if local:
        return LOCAL_COPY_BYTES_PER_S
    measured = cal.link_rate(offer.provider, direction)
    if measured:
        return measured
    t = cal.transfer
    laptop = t.laptop_up_mbps if direction == "up" else t.laptop_down_mbps
    machine = offer.inet_down_mbps if direction == "up" else offer.inet_up_mbps
    return _bytes_per_s(min(laptop, machine) if machine else laptop, t.network_efficiency)
