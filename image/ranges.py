"""The one table of what a real job's numbers can be: field → allowed range.

Why: a value no real job has (epochs 1e30, a folder `99999999999999999999_x`, `gpu_count: 100000`, NaN) must stop at
`validate`, for free, with a line naming the field and the range — not rent a machine, overflow the lease, or end
in a misleading "no offers matched". Checks are written so that NaN and infinity fail them (`low <= x <= high` is
False for NaN; every value is also tested with `math.isfinite`).

Keys are `<section>.<field>` of the job spec (the kohya TOML maps onto the same fields). A new numeric field gets a
row here; `tests/image/test_ranges.py` fails for a numeric spec field without one. Tuples (resolution, grid seeds)
are checked element by element. Torch-free: the laptop and the engine import it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

SEED_MAX = 2**32 - 1  # numpy/torch generators take 32-bit seeds everywhere we pass them


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    low_open: bool = False  # True: the low end itself is not allowed (learning-rate-like "greater than 0")
    why: str = ""  # shown after the range when the bound is not obvious

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        low = f"greater than {_num(self.low)}" if self.low_open else f"from {_num(self.low)}"
        text = f"{low} to {_num(self.high)}"
        return f"{text} ({self.why})" if self.why else text


def _num(x: float) -> str:
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}".replace(",", "_") if abs(x) >= 100_000 else str(int(x))
    return f"{x:g}"


RANGES: dict[str, Range] = {
    # model
    "model.clip_skip": Range(1, 12),
    # dataset
    "dataset.repeats": Range(1, 10_000, why="the number before '_' in a folder name"),
    "dataset.resolution": Range(32, 4096, why="pixels per side; 32 is for the tiny test models"),
    "dataset.min_bucket_reso": Range(16, 4096),
    "dataset.max_bucket_reso": Range(32, 8192),
    "dataset.bucket_reso_steps": Range(8, 512),
    "dataset.keep_tokens": Range(0, 255),
    "dataset.caption_dropout_rate": Range(0, 1, why="a fraction below 1"),
    "dataset.caption_tag_dropout_rate": Range(0, 1, why="a fraction below 1"),
    "dataset.prior_loss_weight": Range(0, 100),
    # training
    "training.max_train_epochs": Range(1, 10_000),
    "training.max_train_steps": Range(1, 1_000_000),
    "training.batch_size": Range(1, 256),
    "training.gradient_accumulation_steps": Range(1, 1024),
    "training.learning_rate": Range(0, 1),
    "training.unet_lr": Range(0, 1),
    "training.text_encoder_lr": Range(0, 1),
    "training.network_dim": Range(1, 1024),
    "training.network_alpha": Range(0, 2048, low_open=True),
    "training.lr_warmup_steps": Range(0, 1_000_000, why="steps, or a fraction below 1 of the total"),
    "training.lr_scheduler_num_cycles": Range(1, 1000),
    "training.lr_scheduler_power": Range(0, 100),
    "training.save_every_n_epochs": Range(1, 10_000),
    "training.save_every_n_steps": Range(1, 1_000_000),
    "training.seed": Range(0, SEED_MAX),
    "training.min_snr_gamma": Range(0, 100, low_open=True),
    "training.noise_offset": Range(0, 1),
    "training.max_grad_norm": Range(0, 1e6, why="0 turns clipping off"),
    "training.max_data_loader_n_workers": Range(0, 64),
    # kohya's training options (image/engine_config.py _validate_kohya_options adds the cross-field rules)
    "training.network_dropout": Range(0, 1, why="a probability below 1"),
    "training.rank_dropout": Range(0, 1, why="a probability below 1"),
    "training.module_dropout": Range(0, 1, why="a probability below 1"),
    "training.conv_dim": Range(1, 1024),
    "training.conv_alpha": Range(0, 2048, low_open=True),
    "training.scale_weight_norms": Range(0, 1e6, low_open=True),
    "training.adaptive_noise_scale": Range(-10, 10),
    "training.multires_noise_iterations": Range(1, 64),
    "training.multires_noise_discount": Range(0, 1, low_open=True),
    "training.ip_noise_gamma": Range(0, 10, low_open=True),
    "training.huber_c": Range(0, 1, low_open=True),
    "training.huber_scale": Range(0, 1e6, low_open=True),
    "training.save_last_n_epochs": Range(1, 10_000),
    "training.lr_scheduler_min_lr_ratio": Range(0, 1),
    "training.min_timestep": Range(0, 999),
    "training.max_timestep": Range(1, 1000),
    "training.v_pred_like_loss": Range(0, 100),
    # sample
    "sample.every_n_epochs": Range(1, 10_000),
    "sample.steps": Range(1, 1000),
    "sample.guidance_scale": Range(0, 100),
    "sample.seed": Range(0, SEED_MAX),
    "sample.width": Range(32, 4096),
    "sample.height": Range(32, 4096),
    "sample.grid_strengths": Range(-10, 10),
    "sample.grid_seeds": Range(0, SEED_MAX),
    # flux (image/flux_config.py)
    "flux.guidance_scale": Range(0, 30, why="the distilled guidance fed while training; 1 for a normal LoRA"),
    "flux.discrete_flow_shift": Range(0, 100, low_open=True),
    "flux.sigmoid_scale": Range(0, 100, low_open=True),
    "flux.t5xxl_max_token_length": Range(1, 512, why="T5 tokens; Flux was trained with at most 512"),
    "flux.sample_guidance_scale": Range(0, 30),
    # resources
    "resources.gpu_count": Range(1, 16, why="GPUs in one machine"),
    "resources.min_vram_gb": Range(0, 1024),
    "resources.max_price_per_hour": Range(0, 1000, low_open=True, why="dollars per hour"),
    "resources.max_cost": Range(0, 100_000, low_open=True, why="dollars"),
    "resources.min_reliability": Range(0, 1),
    "resources.min_inet_down_mbps": Range(0, 100_000),
    "resources.disk_gb": Range(10, 10_000, why="a base model and outputs need 10 GB or more"),
    "resources.ssh_port": Range(1, 65535),
    "resources.price_per_hour": Range(0, 1000, why="dollars per hour"),
    "resources.max_bid_per_hour": Range(0, 1000, low_open=True, why="dollars per hour, whole machine"),
    "resources.bid_margin": Range(0, 5, why="a share of the minimum bid: 0.1 = 10% above"),
    "resources.max_interruptions": Range(0, 100, why="re-rents after interruptions"),
}

# Not fields of the spec, but numbers a job implies; bounded so that nothing downstream (cost, lease, the agent's
# clock) meets an absurd value.
TOTAL_STEPS = Range(1, 1_000_000, why="optimizer steps in the whole run")
LEASE_SECONDS = Range(1, 14 * 24 * 3600, why="seconds; two weeks at most")
GRACE_SECONDS = Range(0, 7 * 24 * 3600, why="seconds")


def out_of_range(key: str, value: Any, rng: Range | None = None) -> str | None:
    """The problem with `value` for field `key` (dotted), or None when it is fine. Non-numbers are not judged."""
    rng = rng or RANGES.get(key)
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            return f"{key}: {v} is not a finite number" + (f"; use a value {rng.describe()}" if rng else "")
        if rng is not None and not rng.contains(float(v)):
            return f"{key}: {_shown(v)} is outside the range a real job has; use a value {rng.describe()}"
    return None


def _shown(v: float) -> str:
    text = f"{v:g}" if isinstance(v, float) else str(v)
    return text if len(text) <= 24 else f"{v:.3g}"


def range_problems(obj: Any, section: str) -> list[str]:
    """Every numeric field of dataclass `obj` checked against the table (and for finiteness); one line each."""
    problems = []
    for f in dataclasses.fields(obj):
        problem = out_of_range(f"{section}.{f.name}", getattr(obj, f.name))
        if problem:
            problems.append(problem)
    return problems
