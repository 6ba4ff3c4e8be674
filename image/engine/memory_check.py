"""Will the job fit the GPU it landed on? Asked before any weight is loaded, using the shared torch-free estimator
(`lorarun.image.memory`, the same numbers the controller used to pick the offer)."""

from __future__ import annotations


def memory_warning(cfg, available_gb: float) -> str | None:
    """None when the run should fit; otherwise what to change (lower batch_size, gradient checkpointing, …)."""
    from lorarun.image import memory

    return memory.suggest_for_config(cfg, available_gb) or None


def estimated_gb(cfg) -> float:
    from lorarun.image import memory

    return memory.estimate_for_config(cfg)
