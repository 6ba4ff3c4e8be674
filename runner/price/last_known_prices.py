"""A price without an account: lorarun ships a small, dated table of last-known public prices
(`last_known_prices.json`, package data) for `lorarun estimate --offline` and for a job that names no provider
yet. Every use says so in the output ("last-known public prices as of …, not live offers"): a marketplace's real
prices move daily, and nothing here can be rented (the offers have no ids a provider knows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from lorarun.provider_adapters.base import Offer
from lorarun.runner.errors import UserInputError

CLOUD_PROVIDERS = ("vastai", "runpod")  # the providers the table prices (ssh and local cost what the user says)


@dataclass(frozen=True)
class PriceTable:
    as_of: str  # "2026-06": when the prices were read
    offers: tuple[Offer, ...]
    sources: tuple[tuple[str, str], ...]  # provider → where the numbers came from

    def label(self) -> str:
        return f"last-known public prices as of {self.as_of} (shipped with lorarun), not live offers"


def load_price_table() -> PriceTable:
    data = json.loads(resources.files(__package__).joinpath("last_known_prices.json").read_text(encoding="utf-8"))
    offers = tuple(
        Offer(
            provider=row["provider"],
            id=f"last-known:{row['provider']}:{row['gpu_name']}",
            gpu_name=row["gpu_name"],
            gpu_count=1,
            vram_gb=float(row["vram_gb"]),
            price_per_hour=float(row["price_per_hour"]),
        )
        for row in data["offers"]
    )
    return PriceTable(as_of=data["as_of"], offers=offers, sources=tuple(data["sources"].items()))


def last_known_offers(providers: list[str], table: PriceTable | None = None) -> list[Offer]:
    """The table's rows for `providers` (cloud ones only: an ssh host or this machine has no public price)."""
    table = table or load_price_table()
    others = [p for p in providers if p not in CLOUD_PROVIDERS]
    if others:
        raise UserInputError(
            f"--offline: {others[0]} has no public price list (it costs what you say: resources.price_per_hour); "
            f"use --offline with {' or '.join(CLOUD_PROVIDERS)}"
        )
    return [o for o in table.offers if o.provider in providers]
