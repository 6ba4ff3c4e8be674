"""Optimizers and learning-rate schedulers, with kohya's names and rules.

- optimizer_type "auto": AdamW8bit when CUDA and bitsandbytes are there (what the guides use), else AdamW
  (fused on CUDA); the choice is reported. AdamW8bit asked for explicitly without CUDA is a config error.
- optimizer_args: kohya's "key=value" strings, values read as Python literals ("betas=0.9,0.999" → a tuple).
- lr_warmup_steps below 1 is a ratio of the total steps (kohya).
- Lion (lion-pytorch), Prodigy (prodigyopt), DAdapt* (dadaptation), PagedAdamW8bit / Lion8bit / PagedLion8bit
  (bitsandbytes, CUDA only): the classes kohya's `train_util.get_optimizer` builds, from the same packages.
- lr_scheduler_args: kohya passes them as keyword arguments to the scheduler function (transformers'
  `get_*_schedule_with_warmup`); the ones those functions take are honoured here, others are a config error.
"""

from __future__ import annotations

import importlib.util
import math

import torch

from lorarun.image.scheduler_args import parse_kohya_args, scheduler_kwargs
from lorarun.image.schema import ConfigError


def has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


BNB_OPTIMIZERS = {
    "AdamW8bit": "AdamW8bit",
    "PagedAdamW8bit": "PagedAdamW8bit",
    "Lion8bit": "Lion8bit",
    "PagedLion8bit": "PagedLion8bit",
}  # lorarun name → bitsandbytes.optim class
DADAPT_OPTIMIZERS = ("DAdaptAdam", "DAdaptLion", "DAdaptAdaGrad", "DAdaptAdan", "DAdaptSGD")  # dadaptation.<name>
ADAPTIVE_LR_OPTIMIZERS = ("Prodigy", *DADAPT_OPTIMIZERS)
# optimizer → (import name, pip name) of the maintained package it comes from
PACKAGES = {
    "Lion": ("lion_pytorch", "lion-pytorch"),
    "Prodigy": ("prodigyopt", "prodigyopt"),
    **dict.fromkeys(DADAPT_OPTIMIZERS, ("dadaptation", "dadaptation")),
}


def resolve_optimizer(name: str, cuda: bool) -> str:
    """The optimizer that will actually run, or a ConfigError saying why the requested one cannot."""
    if name == "auto":
        return "AdamW8bit" if cuda and has_bitsandbytes() else "AdamW"
    if name in BNB_OPTIMIZERS:
        if not cuda:
            raise ConfigError(
                f"training.optimizer_type: {name} needs a CUDA GPU (bitsandbytes); use AdamW or auto on this machine"
            )
        if not has_bitsandbytes():
            raise ConfigError(
                f"training.optimizer_type: {name} needs the bitsandbytes package; pip install "
                "bitsandbytes, or use AdamW"
            )
    if name in PACKAGES and importlib.util.find_spec(PACKAGES[name][0]) is None:
        raise ConfigError(
            f"training.optimizer_type: {name} needs the {PACKAGES[name][1]} package; "
            f"pip install {PACKAGES[name][1]}, or use AdamW"
        )
    return name


def adaptive_lr_warning(name: str, lrs: list[float]) -> str | None:
    """kohya's warnings for D-Adaptation / Prodigy: they expect a learning rate around 1.0, and use only the first
    group's rate when several are given."""
    if name not in ADAPTIVE_LR_OPTIMIZERS or not lrs:
        return None
    notes = []
    if lrs[0] <= 0.1:
        notes.append(f"learning rate {lrs[0]} is low for {name}; these optimizers expect about 1.0")
    if len(set(lrs)) > 1:
        notes.append(f"{name} uses only the first learning rate ({lrs[0]}) when UNet and text encoder rates differ")
    return "; ".join(notes) or None


def parse_optimizer_args(args: tuple[str, ...]) -> dict:
    return parse_kohya_args(args)


def build_optimizer(name: str, param_groups: list[dict], lr: float, args: tuple[str, ...], cuda: bool):
    kwargs = parse_optimizer_args(args)
    if name == "AdamW":
        if cuda:
            kwargs.setdefault("fused", True)  # one kernel for all LoRA tensors instead of thousands
        return torch.optim.AdamW(param_groups, lr=lr, **kwargs)
    if name in BNB_OPTIMIZERS:
        import bitsandbytes as bnb

        return getattr(bnb.optim, BNB_OPTIMIZERS[name])(param_groups, lr=lr, **kwargs)
    if name in DADAPT_OPTIMIZERS:
        import dadaptation

        return getattr(dadaptation, name)(param_groups, lr=lr, **kwargs)
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


def lr_lambda(
    name: str,
    total: int,
    warmup: int,
    num_cycles: float | None = None,
    power: float = 1.0,
    *,
    base_lr: float = 1.0,
    lr_end: float = 0.0,
    min_lr_rate: float | None = None,
    min_lr: float | None = None,
):
    """Multiplier of the base LR at optimizer step `step` — the formulas of transformers.optimization, which kohya
    calls. num_cycles None = the function's default (0.5 half-waves for cosine / cosine_with_min_lr, 1 restart
    cycle for cosine_with_restarts). polynomial decays to lr_end (0 unless lr_scheduler_args sets it);
    cosine_with_min_lr to min_lr_rate x the base LR (or min_lr)."""
    total = max(total, 1)
    if name == "cosine_with_min_lr" and min_lr_rate is None:
        if min_lr is None:
            raise ConfigError("training.lr_scheduler_min_lr_ratio: cosine_with_min_lr needs a minimum")
        min_lr_rate = min_lr / base_lr

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
        if name in ("cosine", "cosine_with_min_lr"):
            cycles = 0.5 if num_cycles is None else float(num_cycles)
            factor = 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress))
            if name == "cosine_with_min_lr":
                factor = factor * (1 - min_lr_rate) + min_lr_rate
            return max(0.0, factor)
        if name == "cosine_with_restarts":
            if progress >= 1.0:
                return 0.0
            cycles = 1.0 if num_cycles is None else float(num_cycles)
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))
        if name == "polynomial":
            end = lr_end / base_lr
            if step > total:
                return end
            return (1.0 - end) * (1.0 - (step - warmup) / max(1, total - warmup)) ** power + end
        raise ConfigError(f"training.lr_scheduler: unknown scheduler {name!r}")

    return f


def build_scheduler(
    optimizer,
    name: str,
    total: int,
    warmup: int,
    num_cycles: int,
    power: float,
    *,
    args: tuple[str, ...] = (),
    min_lr_ratio: float | None = None,
):
    kwargs = scheduler_kwargs(name, args, num_cycles=num_cycles, power=power, min_lr_ratio=min_lr_ratio)
    base_lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(name, total, warmup, base_lr=base_lr, **kwargs))
