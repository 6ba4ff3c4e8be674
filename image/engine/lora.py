"""LoRA adapters (peft) on kohya's target set, and the few operations the engine needs on them.

kohya's init (down: kaiming-uniform a=√5, up: zeros) is peft's default `init_lora_weights=True`, and its scale
alpha / rank is peft's `lora_alpha / r`, so a file trained here behaves as one trained by kohya at the same dim/alpha.

kohya's `networks.lora` extras live here too: LoCon (conv_dim / conv_alpha on the 3x3 convs), its three dropouts
(network_dropout, and network_args rank_dropout / module_dropout — all applied to the down projection's output, as
`LoRAModule.forward` does, not to the input as peft's lora_dropout would), and `apply_max_norm_regularization`
(scale_weight_norms).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer

from lorarun.image.engine.kohya_keys import (
    TEXT_ENCODER_TARGETS,
    UNET_CONV3X3_TARGETS,
    UNET_RESNET_OTHER_TARGETS,
    UNET_TARGETS,
)

ADAPTER = "default"


@dataclass(frozen=True)
class LoraDropout:
    """kohya LoRAModule.forward's dropouts; None = off (kohya's default)."""

    dropout: float | None = None  # network_dropout: F.dropout on the down projection's output
    rank_dropout: float | None = None  # zero whole ranks per sample, rescale by 1/(1-p)
    module_dropout: float | None = None  # skip the whole LoRA of a module for this forward

    @property
    def active(self) -> bool:
        return bool(self.dropout or self.rank_dropout or self.module_dropout)


def kohya_dropout(lx: torch.Tensor, drop: LoraDropout) -> torch.Tensor:
    """The part of kohya `LoRAModule.forward` between lora_down and lora_up, in training mode. Multiplying `lx` is
    the same as kohya's: lora_up is linear without bias, so a zero `lx` is kohya's "return org_forwarded", and
    1/(1-p) on `lx` is its `scale * (1 / (1 - rank_dropout))`."""
    if drop.module_dropout is not None and torch.rand(1) < drop.module_dropout:
        return lx * 0
    if drop.dropout is not None:
        lx = F.dropout(lx, p=drop.dropout)
    if drop.rank_dropout is not None:
        mask = (
            torch.rand((lx.size(0), lx.size(1) if lx.dim() == 4 else lx.size(-1)), device=lx.device) > drop.rank_dropout
        )
        if lx.dim() == 3:
            mask = mask.unsqueeze(1)  # text encoder / transformer tokens: (B, N, r)
        elif lx.dim() == 4:
            mask = mask.unsqueeze(-1).unsqueeze(-1)  # conv: (B, r, H, W)
        lx = lx * mask * (1.0 / (1.0 - drop.rank_dropout))
    return lx


def add_dropout_hooks(model: torch.nn.Module, drop: LoraDropout) -> int:
    """Apply `kohya_dropout` to every LoRA down projection's output while the model trains. Returns the count."""
    if not drop.active:
        return 0

    def hook(module, inputs, output):
        return kohya_dropout(output, drop) if module.training else output

    count = 0
    for module in unwrap(model).modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            module.lora_A[ADAPTER].register_forward_hook(hook)
            count += 1
    return count


def add_lora(
    model: torch.nn.Module,
    rank: int,
    alpha: float,
    targets: tuple[str, ...],
    *,
    rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, float] | None = None,
) -> list[torch.nn.Parameter]:
    """Freeze `model`, inject LoRA on `targets`, keep the LoRA parameters in fp32 (the base may be bf16/fp16:
    fp32 LoRA weights keep small updates from rounding away). Returns the trainable parameters."""
    model.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        init_lora_weights=True,
        rank_pattern=rank_pattern or {},
        alpha_pattern=alpha_pattern or {},
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    if not params:
        raise RuntimeError(f"no LoRA target ({', '.join(targets)}) found in {type(model).__name__}")
    return params


def add_unet_lora(unet, rank: int, alpha: float, conv_dim: int | None = None, conv_alpha: float | None = None):
    """kohya's UNet set; with conv_dim (LoCon) also the resnets' and samplers' layers, the 3x3 convs at
    conv_dim / conv_alpha (kohya's default conv_alpha is 1)."""
    if not conv_dim:
        return add_lora(unet, rank, alpha, UNET_TARGETS)
    conv_alpha = 1.0 if conv_alpha is None else conv_alpha
    patterns = [t.replace(".", r"\.") for t in UNET_CONV3X3_TARGETS]  # peft matches these as regular expressions
    return add_lora(
        unet,
        rank,
        alpha,
        UNET_TARGETS + UNET_RESNET_OTHER_TARGETS + UNET_CONV3X3_TARGETS,
        rank_pattern=dict.fromkeys(patterns, conv_dim),
        alpha_pattern=dict.fromkeys(patterns, conv_alpha),
    )


def add_text_encoder_lora(text_encoder, rank: int, alpha: float):
    return add_lora(text_encoder, rank, alpha, TEXT_ENCODER_TARGETS)


def lora_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """PEFT keys without the adapter name: `<module path>.lora_A.weight` / `.lora_B.weight`."""
    return get_peft_model_state_dict(unwrap(model), adapter_name=ADAPTER)


def load_lora_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(unwrap(model), state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"resume state does not fit the model: unexpected keys {unexpected[:3]}")


def set_lora_strength(models: list[torch.nn.Module], strength: float) -> None:
    """Multiply every LoRA's alpha/rank scale by `strength` (0 = off), as a UI's LoRA weight slider does."""
    for model in models:
        for module in unwrap(model).modules():
            if isinstance(module, LoraLayer) and ADAPTER in module.scaling:
                module.set_scale(ADAPTER, strength)


@torch.no_grad()
def apply_max_norm_regularization(models: list[torch.nn.Module], max_norm_value: float):
    """kohya `LoRANetwork.apply_max_norm_regularization` (scale_weight_norms), on the peft modules: for each LoRA,
    the weight delta up·down·(alpha/dim), its norm clamped below at max/2; when above max, up and down are both
    scaled by √(max/norm). Returns (keys scaled, mean norm after scaling, max norm after scaling) as tensors on the
    device (no host sync; read them when an event is due)."""
    scaled, norms = [], []
    for model in models:
        for module in unwrap(model).modules():
            if not (isinstance(module, LoraLayer) and ADAPTER in module.lora_A):
                continue
            down = module.lora_A[ADAPTER].weight
            up = module.lora_B[ADAPTER].weight
            scale = module.lora_alpha[ADAPTER] / module.r[ADAPTER]
            if up.shape[2:] == (1, 1) and down.shape[2:] == (1, 1):
                updown = (up.squeeze(2).squeeze(2) @ down.squeeze(2).squeeze(2)).unsqueeze(2).unsqueeze(3)
            elif up.shape[2:] == (3, 3) or down.shape[2:] == (3, 3):
                updown = F.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
            else:
                updown = up @ down
            updown = updown * scale
            norm = updown.norm().clamp(min=max_norm_value / 2)
            desired = torch.clamp(norm, max=max_norm_value)
            ratio = desired / norm
            up.mul_(ratio.sqrt().to(up.dtype))
            down.mul_(ratio.sqrt().to(down.dtype))
            scaled.append(ratio != 1)
            norms.append(updown.norm() * ratio)
    if not norms:
        return 0, 0.0, 0.0
    stacked = torch.stack(norms)
    return torch.stack(scaled).sum(), stacked.mean(), stacked.max()


def count_lora_layers(model: torch.nn.Module) -> int:
    return sum(1 for m in unwrap(model).modules() if isinstance(m, LoraLayer))


def unwrap(model):
    """The module under DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
