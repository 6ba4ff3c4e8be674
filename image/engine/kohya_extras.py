"""The trainer's side of kohya's training options that are not step math: which LoRA layers and dropouts to set up,
the loss options, max-norm after each optimizer step, and save_last_n_epochs. Kept here so `train.py` only calls in.
"""

from __future__ import annotations

from pathlib import Path

from lorarun.image.engine.lora import LoraDropout
from lorarun.image.engine.optim import adaptive_lr_warning
from lorarun.image.engine.step import LossOptions


def lora_dropout(t) -> LoraDropout:
    return LoraDropout(t.network_dropout, t.rank_dropout, t.module_dropout)


def loss_options(t) -> LossOptions:
    return LossOptions.from_training(t)


def checkpoint_to_remove(epoch: int, save_every: int | None, last_n: int | None) -> int | None:
    """kohya `train_util.get_remove_epoch_no`: after saving epoch `epoch`, the epoch file to delete, if any."""
    if last_n is None or not save_every:
        return None
    remove = epoch - save_every * last_n
    return remove if remove > 0 else None  # kohya returns 0 too, whose file never exists


def step_save_due(t, global_step: int, *, done: bool, epoch_save_follows: bool) -> bool:
    """kohya `save_every_n_steps`: a checkpoint (and with it the resume state) after every N optimizer steps, so
    an interrupted rental loses at most N steps. Not at the last step (the final file is written then) nor where
    the epoch's own checkpoint follows at this very step (the same weights twice)."""
    every = t.save_every_n_steps
    return bool(every) and global_step % every == 0 and not done and not epoch_save_follows


def remove_old_checkpoint(events, path_for_epoch, epoch: int, t) -> None:
    remove = checkpoint_to_remove(epoch, t.save_every_n_epochs, t.save_last_n_epochs)
    if remove is None:
        return
    path = Path(path_for_epoch(remove))
    if path.exists():
        events.remove_output("removed", path, reason=f"save_last_n_epochs={t.save_last_n_epochs}", epoch=remove)


def fast_step_levers_off(t) -> tuple[str, ...]:
    """Levers of the fast step (image/engine/fast/) that would bypass a kohya option, so they are left out:
    - LoRA dropouts act through a hook on each down projection, which the fused LoRA linear never calls, and module
      dropout draws its coin on the host (a graph break, no CUDA graph);
    - max-norm scales the LoRA weights in place after the step, which a bf16 copy refreshed from fp32 masters
      would overwrite."""
    off: list[str] = []
    if t.network_dropout or t.rank_dropout or t.module_dropout:
        off += ["fused_lora", "compile", "cuda_graphs"]
    if t.scale_weight_norms:
        off += ["master_weights"]
    return tuple(off)


def optimizer_warning(name: str, groups: list[dict]) -> str | None:
    return adaptive_lr_warning(name, [g["lr"] for g in groups])
