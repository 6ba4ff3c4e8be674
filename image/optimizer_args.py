"""kohya's `optimizer_args` ("key=value" strings) checked without torch, so a bad value fails at `validate` on the
laptop instead of in the optimizer's constructor on a rented GPU.

Values are Python literals, read the way the engine reads them (`ast.literal_eval`; "betas=0.9,0.999" is a
tuple). Each optimizer accepts the keyword arguments of its constructor (torch.optim.AdamW, bitsandbytes
AdamW8bit, lion_pytorch.Lion, prodigyopt.Prodigy, transformers' Adafactor); a key it does not take would raise
TypeError there, so it is refused here with the closest known key.
"""

from __future__ import annotations

import ast
import difflib
import math
from typing import Any

# kind: "unit" = a number in [0, 1]; "beta" = in [0, 1); "pos" = finite > 0; "nonneg" = finite >= 0;
# "betas" = a tuple of betas; "bool"; "int"; "eps2" = a tuple of two positive numbers (Adafactor's eps).
_ADAMW = {
    "weight_decay": "nonneg",
    "betas": "betas",
    "eps": "pos",
    "amsgrad": "bool",
    "maximize": "bool",
    "foreach": "bool",
    "capturable": "bool",
    "differentiable": "bool",
    "fused": "bool",
}
_ADAMW8BIT = {
    "weight_decay": "nonneg",
    "betas": "betas",
    "eps": "pos",
    "amsgrad": "bool",
    "optim_bits": "int",
    "min_8bit_size": "int",
    "percentile_clipping": "int",
    "block_wise": "bool",
    "is_paged": "bool",
}
OPTIMIZER_KEYS: dict[str, dict[str, str]] = {
    "AdamW": _ADAMW,
    "AdamW8bit": _ADAMW8BIT,
    "auto": {k: v for k, v in _ADAMW.items() if k in _ADAMW8BIT},  # either may run: only keys both take
    "Lion": {"weight_decay": "nonneg", "betas": "betas", "use_triton": "bool", "decoupled_weight_decay": "bool"},
    "Prodigy": {
        "weight_decay": "nonneg",
        "betas": "betas",
        "beta3": "beta",
        "eps": "pos",
        "d0": "pos",
        "d_coef": "pos",
        "growth_rate": "pos",
        "decouple": "bool",
        "use_bias_correction": "bool",
        "safeguard_warmup": "bool",
        "fsdp_in_use": "bool",
        "slice_p": "int",
    },
    # bitsandbytes (CUDA only) and dadaptation: their constructors' keyword arguments (bitsandbytes 0.45+, dadaptation 3.2)
    "PagedAdamW8bit": {
        "weight_decay": "nonneg",
        "betas": "betas",
        "eps": "pos",
        "amsgrad": "bool",
        "optim_bits": "int",
        "min_8bit_size": "int",
    },
    "Lion8bit": {"weight_decay": "nonneg", "betas": "betas", "min_8bit_size": "int", "is_paged": "bool"},
    "PagedLion8bit": {"weight_decay": "nonneg", "betas": "betas", "min_8bit_size": "int"},
    "DAdaptAdam": {
        "betas": "betas",
        "eps": "pos",
        "weight_decay": "nonneg",
        "log_every": "int",
        "decouple": "bool",
        "use_bias_correction": "bool",
        "d0": "pos",
        "growth_rate": "pos",
        "fsdp_in_use": "bool",
    },
    "DAdaptLion": {"betas": "betas", "weight_decay": "nonneg", "log_every": "int", "d0": "pos", "fsdp_in_use": "bool"},
    "DAdaptAdaGrad": {
        "momentum": "beta",
        "log_every": "int",
        "weight_decay": "nonneg",
        "eps": "pos",
        "d0": "pos",
        "growth_rate": "pos",
    },
    "DAdaptAdan": {
        "betas": "betas",
        "eps": "pos",
        "weight_decay": "nonneg",
        "no_prox": "bool",
        "log_every": "int",
        "d0": "pos",
        "growth_rate": "pos",
    },
    "DAdaptSGD": {
        "momentum": "beta",
        "weight_decay": "nonneg",
        "log_every": "int",
        "d0": "pos",
        "growth_rate": "pos",
        "fsdp_in_use": "bool",
    },
    "Adafactor": {
        "eps": "eps2",
        "clip_threshold": "pos",
        "decay_rate": "decay",
        "beta1": "beta",
        "weight_decay": "nonneg",
        "scale_parameter": "bool",
        "relative_step": "bool",
        "warmup_init": "bool",
    },
}


def parse_value(text: str) -> Any:
    """The engine's reading of a value: a Python literal, else the text itself."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text.strip()


def optimizer_args_problems(optimizer: str, args: tuple[str, ...], where: str = "training.optimizer_args") -> list[str]:
    """One line per bad `key=value`; empty when all are fine (unknown optimizers are judged elsewhere)."""
    known = OPTIMIZER_KEYS.get(optimizer)
    problems: list[str] = []
    seen: set[str] = set()
    for arg in args:
        if "=" not in arg:
            problems.append(f"{where}: {arg!r} is not of the form key=value")
            continue
        key, text = (part.strip() for part in arg.split("=", 1))
        if key in seen:
            problems.append(f"{where}: {key} is given twice")
            continue
        seen.add(key)
        if known is None:
            continue
        if key not in known:
            hint = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            tail = f"did you mean {hint[0]!r}?" if hint else f"it takes {', '.join(sorted(known))}"
            problems.append(f"{where}: {optimizer} takes no argument {key!r}; {tail}")
            continue
        problem = _value_problem(known[key], parse_value(text))
        if problem:
            problems.append(f"{where}: {key}={text}: {problem}")
    return problems


def _value_problem(kind: str, value: Any) -> str | None:
    if kind == "bool":
        return None if isinstance(value, bool) else "expected True or False"
    if kind == "int":
        return (
            None
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**31
            else "expected a whole number"
        )
    if kind in ("betas", "eps2"):
        if not isinstance(value, tuple) or len(value) not in (2, 3) or (kind == "eps2" and len(value) != 2):
            return "expected numbers separated by commas, e.g. 0.9,0.999"
        for item in value:
            problem = _value_problem("beta" if kind == "betas" else "pos", item)
            if problem:
                return problem
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "expected a number"
    if not math.isfinite(value):
        return "not a finite number"
    if kind == "beta" and not 0 <= value < 1:
        return "must be from 0 to below 1"
    if kind == "pos" and not value > 0:
        return "must be greater than 0"
    if kind == "nonneg" and not 0 <= value <= 10:
        return "must be from 0 to 10"
    if kind == "decay" and not -1 <= value <= 0:
        return "must be from -1 to 0 (Adafactor's decay_rate, default -0.8)"
    return None
