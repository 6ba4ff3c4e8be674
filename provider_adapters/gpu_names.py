"""GPU names as users write them → each provider's exact names. One table, shared by every adapter.

Vast matches `gpu_name` exactly (`{"gpu_name": {"in": [...]}}` on `/api/v0/bundles/`): `["A100"]` finds nothing,
because Vast's names are "A100 PCIE", "A100 SXM4", "H100 SXM", "RTX 4090" … RunPod creates pods by gpuTypeId
("NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3"). Users write "A100", "4090", "rtx_4090", "H100 SXM".

Sources for the provider names (read 2026-11):
- Vast: dstackai/gpuhunt `src/gpuhunt/providers/vastai.py` (`DirectGPUMappingRule.DIRECT_MAPPING`: "A100" →
  ["A100 PCIE", "A100 SXM4"], "H100" → ["H100 PCIE", "H100 SXM"], "V100" → ["Tesla V100"], "T4" → ["Tesla T4"];
  `SameGPUMappingRule` "L40S", "L40", "A10", "A40", "L4", "A100X", "H200"; `RTXNumberMappingRule` "RTX4090" →
  "RTX 4090"; `RTXAdaMappingRule` "RTX4000Ada" → "RTX 4000Ada"; `ANumberMappingRule` "A5000" → "RTX A5000"), and
  /work/shared/reference/providers.md §1.2 ("RTX 4090", "H100 SXM", names contain spaces).
- RunPod: skypilot-org/skypilot `sky/provision/runpod/utils.py` and `sky/adaptors/runpod.py` (`GPU_NAME_MAP`:
  'A100-80GB' → 'NVIDIA A100 80GB PCIe', 'A100-80GB-SXM' → 'NVIDIA A100-SXM4-80GB', 'H100' → 'NVIDIA H100 PCIe',
  'H100-SXM' → 'NVIDIA H100 80GB HBM3' ("displayed as SXM at the console but the ID from the API appears as
  HBM"), 'H100-NVL' → 'NVIDIA H100 NVL', 'H200-SXM' → 'NVIDIA H200', 'RTX4090' → 'NVIDIA GeForce RTX 4090',
  'RTXA6000' → 'NVIDIA RTX A6000', 'RTX6000-Ada' → 'NVIDIA RTX 6000 Ada Generation', 'L40S' → 'NVIDIA L40S' …).

A name the table does not know is passed on as written (underscores read as spaces, as Vast's CLI does:
vast-ai/vast-python `vast.py::parse_query` `value.replace('_', ' ')`), and `match()` says it was not in the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VAST, RUNPOD = "vastai", "runpod"


@dataclass(frozen=True)
class GpuModel:
    """One card as users name it, with each provider's exact names for it (empty: that provider has none)."""

    name: str  # how lorarun shows it
    aliases: tuple[str, ...]  # further spellings users write (normalised before comparing)
    vast: tuple[str, ...]
    runpod: tuple[str, ...]


def _rtx(num: str, runpod: bool = True) -> GpuModel:
    """GeForce cards: Vast "RTX 4090" (gpuhunt RTXNumberMappingRule), RunPod "NVIDIA GeForce RTX 4090" (SKY)."""
    return GpuModel(f"RTX {num}", (num,), (f"RTX {num}",), (f"NVIDIA GeForce RTX {num}",) if runpod else ())


def _rtx_a(num: str) -> GpuModel:
    """Pro Ampere cards: Vast "RTX A6000" (gpuhunt ANumberMappingRule), RunPod "NVIDIA RTX A6000" (SKY)."""
    return GpuModel(f"RTX A{num}", (f"A{num}",), (f"RTX A{num}",), (f"NVIDIA RTX A{num}",))


def _ada(num: str) -> GpuModel:
    """Ada workstation cards: Vast "RTX 6000Ada" (gpuhunt RTXAdaMappingRule), RunPod "NVIDIA RTX 6000 Ada
    Generation" (SKY)."""
    return GpuModel(
        f"RTX {num} Ada",
        (f"RTX {num} Ada Generation", f"{num} Ada"),
        (f"RTX {num}Ada",),
        (f"NVIDIA RTX {num} Ada Generation",),
    )


TABLE: tuple[GpuModel, ...] = (
    _rtx("3060", runpod=False),
    _rtx("3070"),
    _rtx("3080"),
    _rtx("3080 Ti"),
    _rtx("3090"),
    _rtx("3090 Ti"),
    _rtx("4070 Ti"),
    _rtx("4080"),
    _rtx("4090"),
    _rtx("5080"),
    _rtx("5090"),
    _rtx_a("4000"),
    _rtx_a("4500"),
    _rtx_a("5000"),
    _rtx_a("6000"),
    _ada("4000"),
    _ada("6000"),
    GpuModel("A10", (), ("A10",), ()),
    GpuModel("A40", (), ("A40",), ("NVIDIA A40",)),
    GpuModel("L4", (), ("L4",), ("NVIDIA L4",)),
    GpuModel("L40", (), ("L40",), ("NVIDIA L40",)),
    GpuModel("L40S", (), ("L40S",), ("NVIDIA L40S",)),
    # "A100" means either form factor; the 80 GB PCIe and SXM4 are what RunPod rents (SKY GPU_NAME_MAP).
    GpuModel("A100", ("A100 80GB",), ("A100 PCIE", "A100 SXM4"), ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB")),
    GpuModel("A100 PCIE", ("A100 PCIe 80GB", "A100 80GB PCIe"), ("A100 PCIE",), ("NVIDIA A100 80GB PCIe",)),
    GpuModel("A100 SXM4", ("A100 SXM", "A100 SXM4 80GB", "A100 80GB SXM"), ("A100 SXM4",), ("NVIDIA A100-SXM4-80GB",)),
    GpuModel("A100X", (), ("A100X",), ()),
    # "H100" means PCIe or SXM; NVL is a different card (gpuhunt keeps "H100NVL" apart; SKY 'H100-NVL').
    GpuModel("H100", ("H100 80GB",), ("H100 PCIE", "H100 SXM"), ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3")),
    GpuModel("H100 PCIE", (), ("H100 PCIE",), ("NVIDIA H100 PCIe",)),
    GpuModel("H100 SXM", ("H100 SXM5", "H100 80GB HBM3", "H100 HBM3"), ("H100 SXM",), ("NVIDIA H100 80GB HBM3",)),
    GpuModel("H100 NVL", (), ("H100 NVL",), ("NVIDIA H100 NVL",)),
    GpuModel("H200", ("H200 SXM",), ("H200",), ("NVIDIA H200",)),
    GpuModel("V100", (), ("Tesla V100",), ()),
    GpuModel("T4", (), ("Tesla T4",), ()),
)

_NOISE = re.compile(r"\b(nvidia|geforce|tesla)\b")


def normalise(name: str) -> str:
    """Lower case, vendor words and every separator dropped: "NVIDIA GeForce RTX 4090", "rtx_4090" and
    "RTX-4090" all become "rtx4090"."""
    text = _NOISE.sub(" ", name.replace("_", " ").replace("-", " ").lower())
    return re.sub(r"[^a-z0-9]", "", text)


def _index() -> dict[str, GpuModel]:
    index: dict[str, GpuModel] = {}
    for model in TABLE:
        for spelling in (model.name, *model.aliases):
            key = normalise(spelling)
            if key in index and index[key] is not model:
                raise AssertionError(f"GPU name table: {spelling!r} names two cards")
            index[key] = model
    return index


_BY_KEY = _index()


@dataclass(frozen=True)
class NameMatch:
    """What one name the user wrote became at one provider."""

    wanted: str
    provider: str
    names: tuple[str, ...]  # the provider's exact names; empty when the provider rents no such card
    known: bool  # False: not in the table, `names` is the user's spelling passed on as written


def lookup(name: str) -> GpuModel | None:
    return _BY_KEY.get(normalise(name))


def match(name: str, provider: str) -> NameMatch:
    model = lookup(name)
    if model is not None:
        names = {VAST: model.vast, RUNPOD: model.runpod}.get(provider, (model.name,))
        return NameMatch(name, provider, names, True)
    as_written = " ".join(name.replace("_", " ").split())
    return NameMatch(name, provider, (as_written,), False)


def provider_names(wanted: tuple[str, ...] | list[str], provider: str) -> tuple[str, ...]:
    """Every exact provider name for the user's list, in order, without repeats."""
    out: list[str] = []
    for name in wanted:
        out += [n for n in match(name, provider).names if n not in out]
    return tuple(out)


def describe(wanted: tuple[str, ...] | list[str], provider: str) -> str:
    """One line for `estimate`: "A100 → A100 PCIE, A100 SXM4; 4090 → RTX 4090"."""
    parts = []
    for name in wanted:
        m = match(name, provider)
        if not m.names:
            parts.append(f"{name} → none (not rented on {provider})")
        elif not m.known:
            parts.append(f"{name} → {m.names[0]} (not in lorarun's table; sent as written)")
        else:
            parts.append(f"{name} → {', '.join(m.names)}")
    return "; ".join(parts)
