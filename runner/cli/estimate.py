"""`lorarun estimate JOB`: what the whole job would cost on each live offer, cheapest first, before renting.

Offers come from the adapters (`offers()` has no side effects); the arithmetic is `runner/price/estimate.py`; the
seconds per step come from `runner/price/calibration.py` (measured runs first). Nothing is rented.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import typer

from lorarun.provider_adapters import gpu_names
from lorarun.provider_adapters.base import Offer
from lorarun.provider_adapters.errors import ProviderError
from lorarun.runner.console import console, err_console
from lorarun.runner.errors import UserInputError, exit_code_and_message
from lorarun.runner.job.provider_choice import how_to_choose
from lorarun.runner.job.spec import PROVIDERS, Resources
from lorarun.runner.job.validate import validate_job
from lorarun.runner.price import interruptible
from lorarun.runner.price.calibration import Calibration, load_calibration
from lorarun.runner.price.estimate import Estimate, EstimateInputs, inputs_from_job, rank
from lorarun.runner.price.offer_choice import no_fit_message
from lorarun.runner.price.offer_table import print_table, shown


def register(app: typer.Typer) -> None:
    app.command("estimate", help="Predict the whole job's time and cost on each live offer (rents nothing).")(estimate)


def estimate(
    job: Path = typer.Argument(..., help="Job file: lorarun YAML or a kohya training TOML."),
    provider: list[str] = typer.Option(
        None, "--provider", "-p", help="Provider(s) to ask: repeat or comma-separate (default: the job's)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
    top: int = typer.Option(10, "--top", "-n", min=1, help="Show the N cheapest fitting (and N excluded) offers."),
    max_cost: float = typer.Option(None, "--max-cost", help="Exclude offers predicted above this many dollars."),
) -> None:
    validated = validate_job(job, max_cost=max_cost)
    spec, scan = validated.spec, validated.scan
    names = provider_names(provider, spec.resources.provider, str(job))
    calibration = load_calibration()
    inputs = inputs_from_job(spec, scan, calibration)
    offers, failures = fetch_offers(names, spec.resources, inputs)
    ranked = rank(inputs, offers, calibration, spec.resources)
    ranked = interruptible.apply(ranked, spec.resources, interruptible.save_interval_steps(validated), always=True)
    if as_json:
        data = to_json(spec.name, spec.source, names, inputs, ranked, calibration, failures, top)
        data["gpu_names"] = {
            name: {g: list(gpu_names.match(g, name).names) for g in spec.resources.gpus}
            for name in names
            if name in (gpu_names.VAST, gpu_names.RUNPOD)
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    for failure in failures:
        err_console.print(f"[yellow]warning:[/] {failure}", highlight=False)
    print_table(spec.name, inputs, ranked, top)
    for line in gpu_name_lines(names, spec.resources.gpus):
        console.print(line, style="dim", highlight=False)
    console.print(accuracy_line(calibration), highlight=False)


def gpu_name_lines(providers: list[str], gpus: tuple[str, ...]) -> list[str]:
    """Which of each provider's exact GPU names the job's `gpus` matched (providers name cards differently)."""
    return [
        f"gpus on {name}: {gpu_names.describe(gpus, name)}"
        for name in providers
        if gpus and name in (gpu_names.VAST, gpu_names.RUNPOD)
    ]


def provider_names(given: list[str] | None, default: str, what: str = "the job") -> list[str]:
    names = [n.strip() for item in (given or [default]) for n in item.split(",") if n.strip()]
    if not names:
        raise UserInputError(how_to_choose(what))
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise UserInputError(f"--provider: unknown provider {unknown[0]!r}; use one of {', '.join(PROVIDERS)}")
    return list(dict.fromkeys(names))  # keep order, drop repeats


def fetch_offers(names: list[str], resources: Resources, inputs: EstimateInputs) -> tuple[list[Offer], list[str]]:
    """Offers from every named provider. With several, one provider failing (no key, down) is a warning and
    the others are still shown; with one, its error is the command's error."""
    from lorarun.runner.run.connect import make_provider

    offers: list[Offer] = []
    failures: list[str] = []
    for name in names:
        try:
            adapter = make_provider(dataclasses.replace(resources, provider=name))
            # Both markets side by side: interruptible rows are shown (excluded when the job says never).
            offers += interruptible.fetch_offers(adapter, resources, inputs, always=True)
        except (ProviderError, UserInputError) as err:
            if len(names) == 1:
                raise
            failures.append(f"{name}: {exit_code_and_message(err)[1]}")
    return offers, failures


def accuracy_line(calibration: Calibration) -> str:
    accuracy = calibration.accuracy()
    if accuracy is None:
        return "calibration: no finished job measured yet; times come from the shipped table"
    return f"calibration: {accuracy.text()}"


def to_json(
    name: str,
    source: str,
    providers: list[str],
    inputs: EstimateInputs,
    ranked: list[Estimate],
    calibration: Calibration,
    failures: list[str],
    top: int,
) -> dict[str, Any]:
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
