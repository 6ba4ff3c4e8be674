"""Turning a UNet with LoRA (and its optimizer groups) into the fast step's parts; used by the trainer and by
`bench/engine_throughput.py`, so both run the same code."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lorarun.image.engine.fast.compiled import compile_unet
from lorarun.image.engine.fast.fused_lora import fuse_lora_layers
from lorarun.image.engine.fast.master import MasterWeightsOptimizer
from lorarun.image.engine.fast.options import FastOptions


@dataclass
class FastStep:
    unet: nn.Module  # what the step calls (compiled / step-marked when asked)
    optimizer: torch.optim.Optimizer
    clip_params: list[torch.Tensor]  # what gradient clipping gets (the flat tensors when flat)
    options: FastOptions
    notes: dict = field(default_factory=dict)  # what was done, for the `fast_step` event

    def full_precision(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A LoRA state dict with each bf16 weight replaced by its fp32 master (files saved at full precision,
        as the plain step's fp32 weights are)."""
        masters = self.optimizer.full_precision() if isinstance(self.optimizer, MasterWeightsOptimizer) else {}
        return {k: masters.get(v.data_ptr(), v) for k, v in state.items()}


def prepare_fast(
    unet: nn.Module,
    groups: list[dict],
    build_optimizer,
    options: FastOptions,
    *,
    weight_dtype: torch.dtype,
    num_shapes: int,
    other_lora_modules: tuple[nn.Module, ...] = (),
    checkpoint_every: int | None = None,
    eager_on_error: bool = False,
) -> FastStep:
    """`groups`: the optimizer's parameter groups (LoRA parameters, fp32, already on the device).
    `build_optimizer(groups) -> Optimizer`: the run's optimizer, on whatever parameters it is given.
    `checkpoint_every`: None leaves gradient checkpointing as it is; 0 turns it off; n checkpoints every n-th block."""
    from lorarun.image.engine.fast.checkpointing import apply_checkpointing

    notes: dict = {"levers": options.active()}
    if options.fused_lora:
        notes["fused_lora_layers"] = sum(fuse_lora_layers(m) for m in (unet, *other_lora_modules))
    if checkpoint_every is not None:
        notes["checkpointed_blocks"] = apply_checkpointing(unet, checkpoint_every)
    master = options.master_weights and weight_dtype != torch.float32
    if master or options.flat_optimizer:
        optimizer = MasterWeightsOptimizer(
            groups, build_optimizer, master=master, flat=options.flat_optimizer, dtype=weight_dtype
        )
        clip = optimizer.clip_tensors()
    else:
        optimizer = build_optimizer(groups)
        clip = [p for g in groups for p in g["params"]]
    step_unet = unet
    if options.compile:
        step_unet = compile_unet(
            unet,
            num_shapes,
            backend=options.compile_backend,
            cuda_graphs=options.cuda_graphs,
            eager_on_error=eager_on_error,
        )
        notes["compiled_shapes"] = num_shapes
    return FastStep(step_unet, optimizer, clip, options, notes)
