"""Gradient checkpointing only when memory needs it, and then only on every n-th UNet block.

Checkpointing recomputes the forward of a checkpointed block during backward: at SD1.5 @512 batch 8 on an H100 it
cost 47 % of the throughput for 22 % less memory (baselines.md). So: none when the run fits without it; otherwise
the sparsest setting (every 4th, 3rd, 2nd block, then all) that the memory estimate says fits. The estimate is the
shared one (`lorarun.image.memory`) with activations saved in proportion to the blocks checkpointed.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

CHOICES = (4, 3, 2, 1)  # every n-th block, sparsest first


def unet_blocks(unet: nn.Module) -> list[nn.Module]:
    blocks = list(unet.down_blocks) + ([unet.mid_block] if unet.mid_block is not None else []) + list(unet.up_blocks)
    return blocks


def apply_checkpointing(unet: nn.Module, every: int) -> int:
    """Checkpoint blocks 0, n, 2n, … (every = n; 0 = none). Returns how many blocks are checkpointed."""
    if every <= 0:
        if getattr(unet, "is_gradient_checkpointing", False):
            unet.disable_gradient_checkpointing()
        return 0
    unet.enable_gradient_checkpointing()  # sets each block's checkpoint function, then switch blocks off
    chosen = 0
    for i, block in enumerate(unet_blocks(unet)):
        on = i % every == 0
        chosen += on
        for module in block.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = on
    return chosen


def fits(cfg, available_gb: float, fraction: float) -> bool:
    """Whether the run fits with `fraction` of the blocks checkpointed, by the shared memory estimate
    (interpolating between none and all)."""
    from lorarun.image import memory

    none = memory.estimate_for_config(replace(cfg, training=replace(cfg.training, gradient_checkpointing=False)))
    full = memory.estimate_for_config(replace(cfg, training=replace(cfg.training, gradient_checkpointing=True)))
    return none + (full - none) * fraction <= available_gb


def plan(cfg, available_gb: float | None, num_blocks: int) -> tuple[int, str]:
    """(every, why): 0 = no checkpointing. `available_gb` None (the CPU) means memory is no constraint."""
    if available_gb is None or fits(cfg, available_gb, 0.0):
        why = "fits without gradient checkpointing" + (
            " (asked for: skipped, same math)" if cfg.training.gradient_checkpointing else ""
        )
        return 0, why
    for every in CHOICES:
        fraction = len(range(0, num_blocks, every)) / num_blocks
        if fits(cfg, available_gb, fraction):
            return every, f"memory estimate needs gradient checkpointing on every {every} block(s) of {num_blocks}"
    return 1, "memory estimate says even full gradient checkpointing may not fit"
