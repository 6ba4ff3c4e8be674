"""`lorarun estimate JOB`: what the whole job would cost on each live offer, cheapest first, before renting.

Offers come from the adapters (`offers()` has no side effects); the arithmetic is `runner/estimate.py`; the
seconds per step come from `runner/calibration.py` (measured runs first). Nothing is rented.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from lorarun.provider_adapters.base import Offer, ResourceRequest
from lorarun.provider_adapters.errors import ProviderError

from ..calibration import Calibration, load_calibration
from ..console import console, err_console, minutes, money
from ..errors import UserInputError, exit_code_and_message
from ..estimate import Estimate, EstimateInputs, inputs_from_job, rank
from ..offer_choice import no_fit_message
from ..spec import PROVIDERS, Resources
from ..validate import validate_job

# Offers asked for per provider. Filters that explain an exclusion (VRAM near the need, CUDA, price, network)
# are applied here rather than by the provider, so the table can say why an offer was left out; the list is
# long enough that the fitting offers are still in it.
OFFER_LIMIT = 40
# Cards down to this share of the job's memory need are fetched, to be shown as "too little VRAM"; smaller ones
# would only push fitting offers out of the provider's cheapest-first list.
VRAM_FETCH_SHARE = 0.75


def register(app: typer.Typer) -> None:
    app.command("estimate", help="Predict the whole job's time and cost on each live offer (rents nothing).")(
        estimate)


def estimate(
    job: Path = typer.Argument(..., help="Job file: lorarun YAML or a kohya training TOML."),
    provider: list[str] = typer.Option(None, "--provider", "-p",
                                       help="Provider(s) to ask: repeat or comma-separate (default: the job's)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
    top: int = typer.Option(10, "--top", "-n", min=1, help="Show the N cheapest fitting (and N excluded) offers."),
    max_cost: float = typer.Option(None, "--max-cost", help="Exclude offers predicted above this many dollars."),
) -> None:
    validated = validate_job(job, max_cost=max_cost)
    spec, scan = validated.spec, validated.scan
    names = provider_names(provider, spec.resources.provider)
    calibration = load_calibration()
    inputs = inputs_from_job(spec, scan, calibration)
    offers, failures = fetch_offers(names, spec.resources, inputs)
    ranked = rank(inputs, offers, calibration, spec.resources)
    if as_json:
        sys.stdout.write(json.dumps(to_json(spec.name, spec.source, names, inputs, ranked, calibration, failures,
                                            top), indent=2) + "\n")
        return
    for failure in failures:
        err_console.print(f"[yellow]warning:[/] {failure}", highlight=False)
    print_table(spec.name, inputs, ranked, top)
    console.print(accuracy_line(calibration), highlight=False)


def provider_names(given: list[str] | None, default: str) -> list[str]:
    names = [n.strip() for item in (given or [default]) for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise UserInputError(f"--provider: unknown provider {unknown[0]!r}; use one of {', '.join(PROVIDERS)}")
    return list(dict.fromkeys(names))  # keep order, drop repeats


def offer_request(resources: Resources, inputs: EstimateInputs) -> ResourceRequest:
    return ResourceRequest(
        gpu_names=resources.gpus, gpu_count=resources.gpu_count,
        min_vram_gb=max(resources.min_vram_gb, inputs.vram_needed_gb * VRAM_FETCH_SHARE),
        max_price_per_hour=None, min_reliability=resources.min_reliability, min_inet_down_mbps=0.0,
        min_cuda=0.0, disk_gb=resources.disk_gb, interruptible=resources.interruptible,
        secure_cloud_only=resources.secure_cloud_only, regions=resources.regions, limit=OFFER_LIMIT,
    )


def fetch_offers(names: list[str], resources: Resources, inputs: EstimateInputs) -> tuple[list[Offer], list[str]]:
    """Offers from every named provider. With several, one provider failing (no key, down) is a warning and
    the others are still shown; with one, its error is the command's error."""
    from ..connect import make_provider

    offers: list[Offer] = []
    failures: list[str] = []
    for name in names:
        try:
            adapter = make_provider(dataclasses.replace(resources, provider=name))
            offers += adapter.offers(offer_request(resources, inputs))
        except (ProviderError, UserInputError) as err:
            if len(names) == 1:
                raise
            failures.append(f"{name}: {exit_code_and_message(err)[1]}")
    return offers, failures


def shown(ranked: list[Estimate], top: int) -> tuple[list[Estimate], list[Estimate]]:
    fitting = [e for e in ranked if e.fits]
    excluded = [e for e in ranked if not e.fits]
    return fitting[:top], excluded[:top]


def print_table(name: str, inputs: EstimateInputs, ranked: list[Estimate], top: int) -> None:
    fitting, excluded = shown(ranked, top)
    several = len({e.offer.provider for e in ranked}) > 1
    w, h = inputs.resolution
    title = (f"{name}: {inputs.steps} steps, batch {inputs.batch_size}, {w}x{h} {inputs.family}, "
             f"~{inputs.vram_needed_gb:.1f} GB VRAM")
    table = Table(title=title, title_justify="left")
    columns = ["#", *(["provider"] if several else []), "GPU", "VRAM", "$/h", "rel.", "start", "xfer",
               "train", "total", "total $"]
    for column in columns:
        # GPU names stay on one line (a wrapped "RTX / 4090" reads as two cards); numbers give way first.
        table.add_column(column, justify="left" if column in ("provider", "GPU") else "right",
                         no_wrap=column in ("GPU", "total $"))
    for i, e in enumerate(fitting, 1):
        table.add_row(str(i), *_cells(e, several))
    console.print(table)
    console.print("minutes: start = boot + image pull + model download; xfer = upload + download; "
                  "train = caching + steps + samples", style="dim", highlight=False)
    if excluded:
        why = Table(title="excluded", title_justify="left")
        for column in (*(["provider"] if several else []), "GPU", "$/h", "total $", "why"):
            why.add_column(column, justify="right" if "$" in column else "left")
        for e in excluded:
            why.add_row(*([e.offer.provider] if several else []), _gpu(e.offer), money(e.offer.price_per_hour),
                        money(e.total_cost), e.excluded)
        console.print(why)
    if not ranked:
        console.print("[yellow]no offers returned[/]; widen resources (gpus, regions, max_price_per_hour)")
    elif fitting:
        best = fitting[0]
        console.print(f"cheapest that fits: [bold]{best.offer.provider} {_gpu(best.offer)}[/] "
                      f"≈ {money(best.total_cost)} in {minutes(best.total_seconds)}; "
                      f"{best.seconds_per_step:.2f} s/step ({_source(best)})", highlight=False)
    else:
        console.print(f"[yellow]{no_fit_message(ranked)}[/]", highlight=False)


def _source(e: Estimate) -> str:
    # Measured and scaled sources already say so ("measured: job …", "scaled from …").
    return e.step_source if e.step_source.startswith(e.step_kind) else f"{e.step_kind}: {e.step_source}"


def _gpu(o: Offer) -> str:
    return f"{o.gpu_count}× {o.gpu_name}" if o.gpu_count > 1 else (o.gpu_name or "-")


def _cells(e: Estimate, several: bool) -> list[str]:
    o, p = e.offer, e.phases
    return [*([o.provider] if several else []), _gpu(o), f"{o.vram_gb:.0f}G" if o.vram_gb else "-",
            f"{o.price_per_hour:.2f}", f"{o.reliability:.2f}" if o.reliability is not None else "-",
            _min(p.startup), _min(p.transfer), _min(p.training), _min(e.total_seconds), money(e.total_cost)]


def _min(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def accuracy_line(calibration: Calibration) -> str:
    accuracy = calibration.accuracy()
    if accuracy is None:
        return "calibration: no finished job measured yet; times come from the shipped table"
    return f"calibration: {accuracy.text()}"


def to_json(name: str, source: str, providers: list[str], inputs: EstimateInputs, ranked: list[Estimate],
            calibration: Calibration, failures: list[str], top: int) -> dict[str, Any]:
    fitting, excluded = shown(ranked, top)
    accuracy = calibration.accuracy()
    return {
        "job": name,
        "job_file": source,
        "providers": providers,
        "inputs": _jsonable(dataclasses.asdict(inputs)),
        "steps": inputs.steps,
        "vram_needed_gb": inputs.vram_needed_gb,
        "offers": [{"rank": i, **e.to_dict()} for i, e in enumerate(fitting, 1)]
                  + [{"rank": None, **e.to_dict()} for e in excluded],
        "fitting_count": sum(1 for e in ranked if e.fits),
        "excluded_count": sum(1 for e in ranked if not e.fits),
        "cheapest": fitting[0].to_dict() if fitting else None,
        "no_fit_reason": None if fitting or not ranked else no_fit_message(ranked),
        "calibration": {
            "measured_jobs": len(calibration.measurements),
            "accuracy": accuracy.text() if accuracy else None,
            "time_ratios": accuracy.time_ratios() if accuracy else [],
            "step_ratios": accuracy.step_ratios() if accuracy else [],
        },
        "provider_errors": failures,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
