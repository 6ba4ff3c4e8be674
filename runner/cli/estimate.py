"""`lorarun estimate JOB`: what the whole job would cost on each live offer, cheapest first, before renting.

Offers come from the adapters (`offers()` has no side effects); the arithmetic is `runner/price/estimate.py`; the
seconds per step come from `runner/price/calibration.py` (measured runs first). Nothing is rented.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from lorarun.runner.console import console
from lorarun.runner.errors import InvalidJob, UserInputError

if TYPE_CHECKING:
    from lorarun.runner.price.calibration import Calibration
    from lorarun.runner.price.estimate import Estimate, EstimateInputs
    from lorarun.runner.price.offer_search import Unseen

# The job, price and provider modules are imported inside the functions that use them: `lorarun --help` imports
# this module to list the command and must stay fast (bench/cli_startup.py).


def register(app: typer.Typer) -> None:
    app.command("estimate", help="Predict the whole job's time and cost on each live offer (rents nothing).")(estimate)


def estimate(
    job: Path = typer.Argument(..., help="Job file: lorarun YAML or a kohya training TOML."),
    provider: list[str] = typer.Option(
        None,
        "--provider",
        "-p",
        help="Provider(s) to ask: repeat or comma-separate (default: the job's).",
        metavar="NAME[,NAME]",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
    top: int = typer.Option(10, "--top", "-n", min=1, help="Show the N cheapest fitting (and N excluded) offers."),
    max_cost: float = typer.Option(
        None, "--max-cost", help="Exclude offers predicted above this many dollars.", metavar="DOLLARS"
    ),
    offline: bool = typer.Option(
        False, "--offline", help="Price from lorarun's shipped table of last-known public prices (no account)."
    ),
) -> None:
    from lorarun.runner.price import interruptible
    from lorarun.runner.price.calibration_load import load_calibration
    from lorarun.runner.price.estimate import rank
    from lorarun.runner.price.job_inputs import inputs_from_job
    from lorarun.runner.price.last_known_prices import CLOUD_PROVIDERS, last_known_offers, load_price_table
    from lorarun.runner.price.offer_search import fetch_offers, gpu_name_matches, providers_unseen

    given = provider_names(provider, "", str(job)) if provider else []
    # the provider the command will use is the one validation judges against (`-p vastai` beats the config's)
    validated, problems = validate_for_estimate(job, given, max_cost)
    spec, scan = validated.spec, validated.scan
    price_list = None
    if given or (spec.resources.provider and not offline):
        names = given or provider_names(None, spec.resources.provider, str(job))
    else:  # no provider chosen anywhere, or --offline: a price without any account, said so
        names = list(CLOUD_PROVIDERS)
    if offline or not (given or spec.resources.provider):
        price_list = load_price_table()
    calibration = load_calibration()
    inputs = inputs_from_job(spec, scan, calibration)
    failures: list[Unseen]
    if price_list is not None:
        offers, failures = last_known_offers(names, price_list), []
    else:
        offers, failures = fetch_offers(names, spec.resources, inputs)
    ranked = rank(inputs, offers, calibration, spec.resources)
    ranked = interruptible.apply(ranked, spec.resources, interruptible.save_interval_steps(validated), always=True)
    unseen = providers_unseen(failures, searched=len(names))
    if as_json:
        data = to_json(
            spec.name,
            spec.source,
            names,
            inputs,
            ranked,
            calibration,
            [f"{f.provider}: {f.why}" for f in failures],
            top,
        )
        data["gpu_names"] = gpu_name_matches(names, spec.resources.gpus)
        data["prices"] = price_list.label() if price_list else "live offers"
        data["problems"] = problems.problems if problems else []
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        print_estimate(validated, inputs, ranked, top, names, calibration, failures, price_list, given)
    if problems is not None:
        raise problems  # after the price: the job's problems, one line each, exit 2
    if unseen is not None:
        raise unseen


def validate_for_estimate(job: Path, given: list[str], max_cost: float | None):
    """(the job as far as it could be judged, its problems or None). A job whose dataset and steps could be
    judged is priced even when other things are wrong (the base model not downloaded yet): the user sees the
    cost and every problem, and the command still exits 2."""
    from lorarun.runner.job.prerent import machine_for, machine_problems
    from lorarun.runner.job.validate import validate_job

    problems: InvalidJob | None = None
    try:
        validated = validate_job(job, provider=given[0] if given else None, max_cost=max_cost)
    except InvalidJob as exc:
        if exc.job is None:
            raise
        validated, problems = exc.job, exc
    extra = [p for name in given[1:] for p in machine_problems(validated.spec, machine_for(name))]
    if extra:  # every provider the command asks is judged
        known = problems.problems if problems else []
        problems = InvalidJob(known + [p for p in dict.fromkeys(extra) if p not in known])
    return validated, problems


def print_estimate(validated, inputs, ranked, top, names, calibration, failures, price_list, given) -> None:
    from rich.markup import escape

    from lorarun.runner.cli.validate import print_summary_notes
    from lorarun.runner.price.offer_search import gpu_name_lines
    from lorarun.runner.price.offer_table import print_table

    spec = validated.spec
    print_summary_notes(validated)
    if price_list is not None:
        why = (
            ""
            if given or spec.resources.provider
            else "no provider chosen (--provider vastai, or lorarun config set provider vastai); "
        )
        console.print(f"[yellow]prices:[/] {why}{escape(price_list.label())}", highlight=False)
    if failures and not ranked:
        return  # nothing was searched: the error says why, no empty table
    print_table(spec.name, inputs, ranked, top, resources=spec.resources)
    for line in gpu_name_lines(names, spec.resources.gpus):
        console.print(line, style="dim", highlight=False)
    if price_list is not None:
        console.print(
            f"prices: {price_list.label()} (sources: {', '.join(src.split(' ')[0] for _, src in price_list.sources)});"
            " live offers: --provider vastai or runpod, with its API key",
            style="dim",
            highlight=False,
        )
    console.print(accuracy_line(calibration), highlight=False)


def provider_names(given: list[str] | None, default: str, what: str = "the job") -> list[str]:
    from lorarun.runner.job.provider_choice import how_to_choose
    from lorarun.runner.job.spec import PROVIDERS

    names = [n.strip() for item in (given or [default]) for n in item.split(",") if n.strip()]
    if not names:
        raise UserInputError(how_to_choose(what))
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise UserInputError(f"--provider: unknown provider {unknown[0]!r}; use one of {', '.join(PROVIDERS)}")
    return list(dict.fromkeys(names))  # keep order, drop repeats


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
    from lorarun.runner.price.offer_choice import no_fit_message
    from lorarun.runner.price.offer_table import shown

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
