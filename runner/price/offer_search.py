"""Offers from several providers at once, for `lorarun estimate`: each provider asked in turn, the ones that could
not be searched named with why (never shown as an empty market), and which of each provider's exact GPU names the
job's `gpus` matched (providers name the same card differently: provider_adapters/gpu_names.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lorarun.provider_adapters import gpu_names
from lorarun.provider_adapters.base import Offer
from lorarun.provider_adapters.errors import ProviderError
from lorarun.runner.errors import ProvidersUnseen, UserInputError, exit_code_and_message
from lorarun.runner.job.spec import Resources
from lorarun.runner.price import interruptible
from lorarun.runner.price.estimate import EstimateInputs
from lorarun.runner.run.connect import make_provider


@dataclass(frozen=True)
class Unseen:
    """A provider the command could not search, why (one line) and the exit code that reason carries."""

    provider: str
    why: str
    exit_code: int


def fetch_offers(names: list[str], resources: Resources, inputs: EstimateInputs) -> tuple[list[Offer], list[Unseen]]:
    """Offers from every named provider, and (provider, why) for each that could not be searched. With one
    provider its error is the command's error; with several the others are still shown, and the command then
    fails naming the provider it could not see (`providers_unseen`)."""
    offers: list[Offer] = []
    failures: list[Unseen] = []
    for name in names:
        try:
            adapter = make_provider(dataclasses.replace(resources, provider=name))
            # Both markets side by side: interruptible rows are shown (excluded when the job says never).
            offers += interruptible.fetch_offers(adapter, resources, inputs, always=True)
        except (ProviderError, UserInputError) as err:
            if len(names) == 1:
                raise
            code, message = exit_code_and_message(err)
            failures.append(Unseen(name, message, code))
    return offers, failures


def providers_unseen(failures: list[Unseen], searched: int) -> ProvidersUnseen | None:
    """A provider that could not be searched is never an empty market: the command says which and why and exits
    non-zero (2 when a key is missing or refused, something the user fixes)."""
    if not failures:
        return None
    lines = [f"{f.provider}: not searched: {f.why[:1].lower()}{f.why[1:]}" for f in failures]
    if len(failures) < searched:
        lines.append("the table shows the other provider(s) only")
    return ProvidersUnseen(lines, exit_code=max(f.exit_code for f in failures))


def gpu_name_lines(providers: list[str], gpus: tuple[str, ...]) -> list[str]:
    """Which of each provider's exact GPU names the job's `gpus` matched (providers name cards differently)."""
    return [
        f"gpus on {name}: {gpu_names.describe(gpus, name)}"
        for name in providers
        if gpus and name in (gpu_names.VAST, gpu_names.RUNPOD)
    ]


def gpu_name_matches(providers: list[str], gpus: tuple[str, ...]) -> dict[str, dict[str, list[str]]]:
    """For `estimate --json`: per provider, each of the job's `gpus` and the provider's exact names it matched."""
    return {
        name: {g: list(gpu_names.match(g, name).names) for g in gpus}
        for name in providers
        if name in (gpu_names.VAST, gpu_names.RUNPOD)
    }
