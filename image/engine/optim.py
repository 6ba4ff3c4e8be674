"""Optimizers and learning-rate schedulers, with kohya's names and rules.

- optimizer_type "auto": AdamW8bit when CUDA and bitsandbytes are there (what the guides use), else AdamW
  (fused on CUDA); the choice is reported. AdamW8bit asked for explicitly without CUDA is a config error.
- optimizer_args: kohya's "key=value" strings, values read as Python literals ("betas=0.9,0.999" → a tuple).
- lr_warmup_steps below 1 is a ratio of the total steps (kohya).
"""
from __future__ import annotations

import ast
import importlib.util
import math

import torch

from ..schema import ConfigError


def has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def resolve_optimizer(name: str, cuda: bool) -> str:
    """The optimizer that will actually run, or a ConfigError saying why the requested one cannot."""
    if name == "auto":
        return "AdamW8bit" if cuda and has_bitsandbytes() else "AdamW"
    if name == "AdamW8bit":
        if not cuda:
            raise ConfigError("training.optimizer_type: AdamW8bit needs a CUDA GPU (bitsandbytes); use AdamW or auto")
        if not has_bitsandbytes():
            raise ConfigError("training.optimizer_type: AdamW8bit needs the bitsandbytes package; pip install "
                              "bitsandbytes, or use AdamW")
    packages = {"Lion": ("lion_pytorch", "lion-pytorch"), "Prodigy": ("prodigyopt", "prodigyopt")}
    if name in packages and importlib.util.find_spec(packages[name][0]) is None:
        raise ConfigError(f"training.optimizer_type: {name} needs the {packages[name][1]} package; "
                          f"pip install {packages[name][1]}, or use AdamW")
    return name


def parse_optimizer_args(args: tuple[str, ...]) -> dict:
    kwargs = {}
    for arg in args:
        key, value = arg.split("=", 1)
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = value.strip()
    return kwargs


def build_optimizer(name: str, param_groups: list[dict], lr: float, args: tuple[str, ...], cuda: bool):
    kwargs = parse_optimizer_args(args)
    if name == "AdamW":
        if cuda:
            kwargs.setdefault("fused", True)  # one kernel for all LoRA tensors instead of thousands
        return torch.optim.AdamW(param_groups, lr=lr, **kwargs)
    if name == "AdamW8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(param_groups, lr=lr, **kwargs)
    if name == "Lion":
        from lion_pytorch import Lion

        return Lion(param_groups, lr=lr, **kwargs)
    if name == "Prodigy":
        from prodigyopt import Prodigy

        return Prodigy(param_groups, lr=lr, **kwargs)
    if name == "Adafactor":
        from transformers.optimization import Adafactor

        # With an explicit learning rate Adafactor must not use its own relative step size (kohya's advice:
        # "scale_parameter=False relative_step=False warmup_init=False").
        for key in ("scale_parameter", "relative_step", "warmup_init"):
            kwargs.setdefault(key, False)
        return Adafactor(param_groups, lr=lr, **kwargs)
    raise ConfigError(f"training.optimizer_type: unknown optimizer {name!r}")


def warmup_steps(value: float, total_steps: int) -> int:
    if 0 < value < 1:
        return int(value * total_steps)
    return int(value)


def lr_lambda(name: str, total: int, warmup: int, num_cycles: int = 1, power: float = 1.0):
    """Multiplier of the base LR at optimizer step `step` — the formulas of diffusers.optimization, which kohya
    calls (cosine_with_restarts = hard restarts with `lr_scheduler_num_cycles`; polynomial to lr_end 0)."""
    total = max(total, 1)

    def f(step: int) -> float:
        if name == "constant":
            return 1.0
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if name == "constant_with_warmup":
            return 1.0
        progress = float(step - warmup) / float(max(1, total - warmup))
        if name == "linear":
            return max(0.0, float(total - step) / float(max(1, total - warmup)))
        if name == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        if name == "cosine_with_restarts":
            if progress >= 1.0:
                return 0.0
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))
        if name == "polynomial":
            if step > total:
                return 0.0
            return (1.0 - (step - warmup) / max(1, total - warmup)) ** power
        raise ConfigError(f"training.lr_scheduler: unknown scheduler {name!r}")

    return f


def build_scheduler(optimizer, name: str, total: int, warmup: int, num_cycles: int, power: float):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(name, total, warmup, num_cycles, power))
