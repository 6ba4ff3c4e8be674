"""Checks against the machine the job will get, before anything is rented: what the engine would otherwise find
only after boot (AdamW8bit without CUDA fails at the first step; fp16/bf16 on a CPU silently trains in fp32).

The machine each provider gives: Vast.ai and RunPod rent CUDA GPUs running our image (bitsandbytes included);
`local` is this machine (its GPUs from nvidia-smi, bitsandbytes from this Python, which runs the local engine);
`ssh` is a host the user owns, unknown until connected, so nothing is assumed there.
"""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

from lorarun.runner.job.spec import YAML_ALIASES, JobSpec

# kohya optimizers that run only on CUDA through bitsandbytes (sd-scripts library/train_util.py get_optimizer).
BITSANDBYTES_OPTIMIZERS = (
    "AdamW8bit",
    "PagedAdamW8bit",
    "PagedAdamW32bit",
    "Lion8bit",
    "PagedLion8bit",
    "SGDNesterov8bit",
    "AdEMAMix8bit",
    "PagedAdEMAMix8bit",
)


@dataclass(frozen=True)
class Machine:
    where: str  # how the user would name it: "this machine's CPU (provider local)"
    cuda: bool | None  # None: not known before connecting
    bitsandbytes: bool | None


def machine_for(provider: str) -> Machine:
    if provider in ("vastai", "runpod"):
        return Machine(f"a rented {provider} GPU", cuda=True, bitsandbytes=True)
    if provider == "local":
        from lorarun.provider_adapters.local import _local_gpu

        name, count, _vram = _local_gpu()
        has_bnb = importlib.util.find_spec("bitsandbytes") is not None
        where = f"this machine's {name}" if count else f"this machine's {name.split(' (')[0]}"
        return Machine(f"{where} (provider local)", cuda=count > 0, bitsandbytes=has_bnb)
    return Machine(f"the {provider} host", cuda=None, bitsandbytes=None)


def machine_problems(spec: JobSpec, machine: Machine) -> list[str]:
    """One line per setting the machine cannot honour, naming the field and the fix."""
    t = spec.training
    problems: list[str] = []
    opt = t.optimizer_type
    if opt in BITSANDBYTES_OPTIMIZERS or opt.lower().endswith("8bit"):
        if machine.cuda is False:
            problems.append(
                f"{spec.source}: training.optimizer_type: {opt} needs a CUDA GPU (bitsandbytes) but the "
                f"job runs on {machine.where}; use AdamW (or auto), or choose a GPU provider"
            )
        elif machine.bitsandbytes is False:
            problems.append(
                f"{spec.source}: training.optimizer_type: {opt} needs the bitsandbytes package on "
                f"{machine.where}; pip install bitsandbytes, or use AdamW"
            )
    if t.mixed_precision in ("fp16", "bf16") and machine.cuda is False and _set_by_user(spec, "mixed_precision"):
        problems.append(
            f"{spec.source}: training.mixed_precision: {t.mixed_precision} needs a CUDA GPU but the job "
            f"runs on {machine.where}, where it would silently train in fp32; set mixed_precision "
            f'"no", or choose a GPU provider'
        )
    return problems


def _set_by_user(spec: JobSpec, key: str) -> bool:
    """Whether the job file itself names `key` (a default the user never wrote is not their mistake; the engine
    notes that it trains in fp32 on a CPU)."""
    path = Path(spec.source)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return True
    aliases = {alias for alias, canonical in YAML_ALIASES["training"].items() if canonical == key} | {key}
    return _mentions(data, aliases)


def job_mentions(spec: JobSpec, names: set[str]) -> bool:
    """Whether the job file names any of `names` as a key, in any section."""
    path = Path(spec.source)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return _mentions(data, names)


def _mentions(data, names: set[str]) -> bool:
    if isinstance(data, dict):
        return any(str(k) in names or _mentions(v, names) for k, v in data.items())
    return False
