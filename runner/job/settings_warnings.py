"""Settings that are valid but quietly do something else than the user meant: warned about, never refused.

- a warm-up as long as the training: the learning rate never reaches its value (the engine's schedule,
  `image/engine/optim.py` `lr_lambda`: step / warmup while step < warmup, as transformers' schedules that kohya
  calls);
- `resources.price_per_hour` on a provider that prices its own machines (only `ssh`, a host the user owns,
  reads it: `provider_adapters/ssh.py`; Vast.ai and RunPod price their offers, `local` costs nothing).
Transparent images are warned about by the dataset scan itself (`image/dataset_scan.py`).
"""

from __future__ import annotations

from lorarun.runner.job.spec import JobSpec

# The schedules whose learning rate the warm-up holds back (`constant` ignores it, as in transformers).
_WARMUP_SCHEDULERS_IGNORE = ("constant",)


def settings_warnings(spec: JobSpec, total_steps: int) -> list[str]:
    """One line per setting that will not do what it says, naming the field and the fix. `total_steps`: the
    validated job's (validate.py), passed in so this module needs only the spec."""
    return [w for w in (warmup_warning(spec, total_steps), price_warning(spec)) if w]


def warmup_warning(spec: JobSpec, total: int) -> str | None:
    t = spec.training
    value = t.lr_warmup_steps
    if not value or t.lr_scheduler in _WARMUP_SCHEDULERS_IGNORE or 0 < value < 1:
        return None  # a fraction below 1 is a share of the total: always shorter than the training
    warmup = int(value)
    if warmup < total:
        return None
    lr = t.unet_lr if t.unet_lr is not None else t.learning_rate
    peak = lr * (total - 1) / warmup  # the last step's multiplier (steps count from 0)
    share = max(1, round(total * 0.05))
    return (
        f"training.lr_warmup_steps: {warmup} warm-up steps but the job trains {total} steps in all: the learning "
        f"rate never reaches {lr:g} (it ends at {peak:.2g}); use fewer, e.g. {share} (5%), or 0.05"
    )


def price_warning(spec: JobSpec) -> str | None:
    r = spec.resources
    if not r.price_per_hour or r.provider == "ssh" or not r.provider:
        return None
    how = "costs nothing to rent" if r.provider == "local" else "prices come from its live offers"
    return (
        f"resources.price_per_hour: {r.price_per_hour:g} is ignored on provider {r.provider} ({r.provider} {how}); "
        f"it is the hourly cost of your own machine for provider ssh"
    )
