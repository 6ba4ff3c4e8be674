"""The offers table `estimate` prints and `submit` shows before asking, and the request that fetches the offers.

Shared by the `estimate` command and the controller's offer choice (`choose.py`), so it lives below both: the
controller never imports a CLI command module.
"""

from __future__ import annotations

from rich.table import Table

from lorarun.provider_adapters.base import Offer, ResourceRequest
from lorarun.runner.console import console, minutes, money
from lorarun.runner.job.spec import Resources
from lorarun.runner.price.estimate import Estimate, EstimateInputs, is_cpu_offer
from lorarun.runner.price.offer_choice import no_fit_message

# Offers asked for per provider. Filters that explain an exclusion (VRAM near the need, CUDA, price, network)
# are applied here rather than by the provider, so the table can say why an offer was left out; the list is
# long enough that the fitting offers are still in it.
OFFER_LIMIT = 40
# Cards down to this share of the job's memory need are fetched, to be shown as "too little VRAM"; smaller ones
# would only push fitting offers out of the provider's cheapest-first list.
VRAM_FETCH_SHARE = 0.75


def offer_request(resources: Resources, inputs: EstimateInputs, *, interruptible: bool = False) -> ResourceRequest:
    """The search for one market: on-demand, or interruptible (Vast `type: bid`, RunPod spot prices) — see
    runner/price/interruptible.py, which asks for both when the job allows interruptible machines."""
    return ResourceRequest(
        gpu_names=resources.gpus,
        gpu_count=resources.gpu_count,
        min_vram_gb=max(resources.min_vram_gb, inputs.vram_needed_gb * VRAM_FETCH_SHARE),
        max_price_per_hour=None,
        min_reliability=resources.min_reliability,
        min_inet_down_mbps=resources.min_inet_down_mbps,
        min_cuda=0.0,
        disk_gb=resources.disk_gb,
        interruptible=interruptible,
        secure_cloud_only=resources.secure_cloud_only,
        regions=resources.regions,
        limit=OFFER_LIMIT,
    )


def shown(ranked: list[Estimate], top: int) -> tuple[list[Estimate], list[Estimate]]:
    fitting = [e for e in ranked if e.fits]
    excluded = [e for e in ranked if not e.fits]
    return fitting[:top], excluded[:top]


def print_table(
    name: str, inputs: EstimateInputs, ranked: list[Estimate], top: int, resources: Resources | None = None
) -> None:
    fitting, excluded = shown(ranked, top)
    several = len({e.offer.provider for e in ranked}) > 1
    w, h = inputs.resolution
    # On a machine without a GPU (provider local) the job trains in system memory: no VRAM to speak of.
    on_cpu = bool(ranked) and all(is_cpu_offer(e.offer) for e in ranked)
    memory = "memory (CPU)" if on_cpu else "VRAM"
    title = (
        f"{name}: {inputs.steps} steps, batch {inputs.batch_size}, {w}x{h} {inputs.family}, "
        f"~{inputs.vram_needed_gb:.1f} GB {memory}"
    )
    table = Table(title=title, title_justify="left")
    risky = any(e.offer.interruptible for e in fitting)  # interruptible rows: their expected total beside the price
    columns = [
        "#",
        *(["provider"] if several else []),
        "GPU",
        "VRAM",
        "$/h",
        "rel.",
        "start",
        "xfer",
        "train",
        "total",
        "total $",
        *(["expected $"] if risky else []),
    ]
    for column in columns:
        # GPU names stay on one line (a wrapped "RTX / 4090" reads as two cards); numbers give way first.
        table.add_column(
            column,
            justify="left" if column in ("provider", "GPU") else "right",
            no_wrap=column in ("GPU", "total $"),
            min_width=len(column),
        )  # headers never cut ("tra…")
    for i, e in enumerate(fitting, 1):
        table.add_row(str(i), *_cells(e, several), *([money(e.expected_cost)] if risky else []))
    console.print(table)
    console.print(
        "minutes: start = boot + image pull + model download; xfer = upload + download; "
        "train = caching + steps + samples",
        style="dim",
        highlight=False,
    )
    if any(_community(e.offer) for e in fitting):
        # RunPod Community hosts may lack a public IP (uploads need direct SSH): lorarun asks for one, and falls
        # back to the next offer, Secure Cloud first, when a pod comes up without it (runner/run/boot.py).
        console.print(
            "community: RunPod Community host, rented with a public IP requested; if it comes up "
            "without one it is destroyed at once and Secure Cloud offers are used instead",
            style="dim",
            highlight=False,
        )
    if risky:
        rates = {e.offer.provider: e.interruption_source for e in fitting if e.offer.interruptible}
        console.print(
            "interruptible: the provider may take the machine back (Vast outbid, RunPod spot); lorarun resumes on "
            "a new rental from the last checkpoint. expected $ adds the re-rent and the work since the last save "
            "at " + "; ".join(f"{p} {why}" for p, why in rates.items()),
            style="dim",
            highlight=False,
        )
    if excluded:
        why = Table(title="excluded", title_justify="left")
        for column in (*(["provider"] if several else []), "GPU", "$/h", "total $", "why"):
            why.add_column(column, justify="right" if "$" in column else "left")
        for e in excluded:
            why.add_row(
                *([e.offer.provider] if several else []),
                _gpu(e.offer),
                money(e.offer.price_per_hour),
                money(e.total_cost),
                e.excluded,
            )
        console.print(why)
    if resources is not None and any(e.offer.provider == "vastai" for e in ranked):
        from lorarun.provider_adapters.vastai.adapter import floors_note

        note = floors_note(resources.min_reliability, resources.min_inet_down_mbps)
        if note:
            console.print(note, style="dim", highlight=False)
    if not ranked:
        console.print("[yellow]no offers returned[/]; widen resources (gpus, regions, max_price_per_hour)")
    elif fitting:
        best = fitting[0]
        console.print(
            f"cheapest that fits: [bold]{best.offer.provider} {_gpu(best.offer)}[/] "
            f"≈ {money(best.total_cost)} in {minutes(best.total_seconds)}; "
            f"{best.seconds_per_step:.2f} s/step ({_source(best)})",
            highlight=False,
        )
    else:
        console.print(f"[yellow]{no_fit_message(ranked)}[/]", highlight=False)


def _source(e: Estimate) -> str:
    # Measured and scaled sources already say so ("measured: job …", "scaled from …").
    return e.step_source if e.step_source.startswith(e.step_kind) else f"{e.step_kind}: {e.step_source}"


def _community(o: Offer) -> bool:
    return o.provider == "runpod" and o.secure_cloud is False


def _gpu(o: Offer) -> str:
    name = f"{o.gpu_count}× {o.gpu_name}" if o.gpu_count > 1 else (o.gpu_name or "-")
    name = f"{name} (community)" if _community(o) else name
    return f"{name} (interruptible)" if o.interruptible else name


def _cells(e: Estimate, several: bool) -> list[str]:
    o, p = e.offer, e.phases
    return [
        *([o.provider] if several else []),
        _gpu(o),
        f"{o.vram_gb:.0f}G" if o.vram_gb else "-",
        f"{o.price_per_hour:.2f}",
        f"{o.reliability:.2f}" if o.reliability is not None else "-",
        _min(p.startup),
        _min(p.transfer),
        _min(p.training),
        _min(e.total_seconds),
        money(e.total_cost),
    ]


def _min(seconds: float) -> str:
    return f"{seconds / 60:.1f}"
