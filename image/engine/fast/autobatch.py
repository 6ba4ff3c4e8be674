"""The largest batch that fits, from measured CUDA memory.

Peak memory is linear in the batch (baselines.md: SD1.5 @512 3.1 / 7.0 / 12.1 GiB at batch 1 / 4 / 8), so two
measured steps give the line, and the budget gives the batch. The pick is then checked with a real step and
stepped down on an out-of-memory error. `peak_gib(batch)` runs one training step at `batch` and returns the peak
allocated GiB (it is the caller's step: eager, compiled, with or without checkpointing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass(frozen=True)
class BatchPick:
    batch: int
    fixed_gib: float  # the line's intercept: weights, LoRA state, workspace
    per_sample_gib: float
    budget_gib: float
    checked_peak_gib: float | None  # the chosen batch's measured peak


def largest_batch(
    peak_gib: Callable[[int], float], budget_gib: float, *, cap: int = 64, probes: tuple[int, int] = (1, 2)
) -> BatchPick:
    small, large = probes
    p_small, p_large = peak_gib(small), peak_gib(large)
    per_sample = max((p_large - p_small) / (large - small), 1e-6)
    fixed = p_small - per_sample * small
    batch = max(1, min(cap, int((budget_gib - fixed) / per_sample)))
    while True:
        try:
            checked = peak_gib(batch)
        except OOM:
            if batch == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch = max(1, int(batch * 0.85))
            continue
        if checked <= budget_gib or batch == 1:
            return BatchPick(batch, round(fixed, 3), round(per_sample, 4), budget_gib, round(checked, 3))
        batch -= 1


def cuda_peak_probe(step: Callable[[int], None], device) -> Callable[[int], float]:
    """Wrap `step(batch)` into `peak_gib(batch)` with CUDA's peak-memory counters."""

    def peak(batch: int) -> float:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(batch)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**30

    return peak
