"""The fast step inside `trainer.Trainer`: everything the trainer needs, computed from its own fields, so that
train.py only dispatches (several people edit train.py; the logic lives here)."""

from __future__ import annotations

import torch

from lorarun.image.engine import data
from lorarun.image.engine.fast.checkpointing import plan as checkpoint_plan
from lorarun.image.engine.fast.checkpointing import unet_blocks
from lorarun.image.engine.fast.compiled import batch_shapes
from lorarun.image.engine.fast.options import FastDecision, decide
from lorarun.image.engine.fast.setup import FastStep, prepare_fast
from lorarun.image.engine.optim import build_optimizer


def decide_for(cfg, *, cuda: bool, world: int, mixed: str, optimizer_name: str) -> FastDecision:
    t = cfg.training
    if cfg.model.family not in ("sd15", "sdxl"):  # Flux has its own trainer and step (image/engine/flux/)
        return FastDecision(None, f"plain step: the fast step covers the SD1.5/SDXL UNet, not {cfg.model.family}")
    from lorarun.image.engine.kohya_extras import fast_step_levers_off  # kohya options some levers would bypass

    off = tuple(dict.fromkeys((*t.fast_step_off, *fast_step_levers_off(t))))
    return decide(t.fast_step, off, cuda=cuda, world=world, mixed=mixed, optimizer=optimizer_name)


def prepare_for_trainer(trainer, unet, groups: list[dict]) -> FastStep:
    """`unet` has its LoRA and is on the device; `groups` are the optimizer groups (UNet first, then the text
    encoders' when they train). Emits one `fast_step` event saying what was done."""
    cfg, t = trainer.cfg, trainer.cfg.training
    options = trainer.fast_decision.options
    cuda = trainer.device.type == "cuda"
    checkpoint_every, checkpoint_why = None, "as configured"
    if options.lean_checkpointing:
        available = None
        if cuda:
            available = cfg.max_vram_gb or torch.cuda.get_device_properties(trainer.device).total_memory / 2**30
        checkpoint_every, checkpoint_why = checkpoint_plan(cfg, available, len(unet_blocks(unet)))
    shapes = batch_shapes(
        data.epoch_batches(trainer.samples, trainer.items, t.batch_size, t.seed, 0),
        [item.bucket for item in trainer.items],
    )

    def build(param_groups):
        return build_optimizer(trainer.optimizer_name, param_groups, param_groups[0]["lr"], t.optimizer_args, cuda)

    fast = prepare_fast(
        unet,
        groups,
        build,
        options,
        weight_dtype=trainer.weight_dtype,
        num_shapes=len(shapes),
        other_lora_modules=tuple(trainer.text_encoders) if trainer.trains_te else (),
        checkpoint_every=checkpoint_every,
        eager_on_error=True,
    )
    trainer.events.emit(
        "fast_step", **fast.notes, batch_shapes=sorted(list(s) for s in shapes), gradient_checkpointing=checkpoint_why
    )
    return fast
