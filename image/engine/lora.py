"""LoRA adapters (peft) on kohya's target set, and the few operations the engine needs on them.

kohya's init (down: kaiming-uniform a=√5, up: zeros) is peft's default `init_lora_weights=True`, and its scale
alpha / rank is peft's `lora_alpha / r`, so a file trained here behaves as one trained by kohya at the same dim/alpha.
"""
from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer

from .kohya_keys import TEXT_ENCODER_TARGETS, UNET_TARGETS

ADAPTER = "default"


def add_lora(model: torch.nn.Module, rank: int, alpha: float, targets: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """Freeze `model`, inject LoRA on `targets`, keep the LoRA parameters in fp32 (the base may be bf16/fp16:
    fp32 LoRA weights keep small updates from rounding away). Returns the trainable parameters."""
    model.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=True)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    if not params:
        raise RuntimeError(f"no LoRA target ({', '.join(targets)}) found in {type(model).__name__}")
    return params


def add_unet_lora(unet, rank: int, alpha: float):
    return add_lora(unet, rank, alpha, UNET_TARGETS)


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
