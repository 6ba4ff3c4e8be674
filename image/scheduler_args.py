"""kohya's lr_scheduler_args and the scheduler options around them, torch-free so the laptop's validate refuses
what the engine would refuse. kohya (`train_util.get_scheduler_fix`) passes lr_scheduler_args as keyword arguments to
transformers' scheduler functions; these are the ones those functions take."""

from __future__ import annotations

import ast
import math

from lorarun.image.schema import ConfigError


def parse_kohya_args(args: tuple[str, ...]) -> dict:
    """kohya's "key=value" strings; values read as Python literals ("betas=0.9,0.999" → a tuple), else text."""
    kwargs = {}
    for arg in args:
        key, value = arg.split("=", 1)
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = value.strip()
    return kwargs


# lr_scheduler_args each scheduler function takes (transformers.optimization, which kohya's get_scheduler_fix calls)
SCHEDULER_ARGS = {
    "constant": (),
    "constant_with_warmup": (),
    "linear": (),
    "cosine": ("num_cycles",),
    "cosine_with_restarts": ("num_cycles",),
    "polynomial": ("power", "lr_end"),
    "cosine_with_min_lr": ("num_cycles", "min_lr_rate", "min_lr"),
}


def scheduler_kwargs(
    name: str, args: tuple[str, ...], *, num_cycles: int = 1, power: float = 1.0, min_lr_ratio: float | None = None
) -> dict:
    """kohya's scheduler arguments for `name`: its own options passed as kohya's get_scheduler_fix passes them
    (lr_scheduler_num_cycles to cosine_with_restarts, half of it to cosine_with_min_lr; lr_scheduler_power;
    lr_scheduler_min_lr_ratio as min_lr_rate), then lr_scheduler_args ("key=value", Python literals) on top."""
    kwargs: dict = {}
    if name == "cosine_with_restarts":
        kwargs["num_cycles"] = num_cycles
    elif name == "polynomial":
        kwargs["power"] = power
    elif name == "cosine_with_min_lr":
        kwargs["num_cycles"] = num_cycles / 2
        if min_lr_ratio is not None:
            kwargs["min_lr_rate"] = min_lr_ratio
    allowed = SCHEDULER_ARGS.get(name, ())
    for key, value in parse_kohya_args(args).items():
        if key not in allowed:
            raise ConfigError(
                f"training.lr_scheduler_args: {key!r} is not an argument of {name} (it takes "
                f"{', '.join(allowed) or 'none'})"
            )
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"training.lr_scheduler_args: {key}={value!r} must be a finite number")
        kwargs[key] = value
    if name == "cosine_with_min_lr":
        if ("min_lr_rate" in kwargs) == ("min_lr" in kwargs):
            raise ConfigError(
                "training.lr_scheduler_min_lr_ratio: cosine_with_min_lr needs exactly one of "
                "lr_scheduler_min_lr_ratio (e.g. 0.1) or min_lr / min_lr_rate in lr_scheduler_args"
            )
    return kwargs


def check_scheduler_args(t, where: str = "training") -> None:
    """Raise ConfigError now for scheduler arguments the engine would refuse (t: TrainingConfig)."""
    try:
        scheduler_kwargs(
            t.lr_scheduler,
            t.lr_scheduler_args,
            num_cycles=t.lr_scheduler_num_cycles,
            power=t.lr_scheduler_power,
            min_lr_ratio=t.lr_scheduler_min_lr_ratio,
        )
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("training.", f"{where}.", 1)) from None
