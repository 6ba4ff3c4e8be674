"""The LoRA path of peft's `lora.Linear` as three GEMMs: `y = x Wᵀ + b`, `h = x (s·A)ᵀ`, `y = y + h Bᵀ`.

peft's forward runs the base layer, a dropout (an identity op when the rate is 0), a dtype cast of the input to
the LoRA weight's dtype, two linears, a multiply of the whole output by the scale and an add: five elementwise
passes over activations per layer. Here the scale multiplies the tiny A (rank × in features) instead of the
activations, the add happens inside the last GEMM (`addmm`, beta = 1), and nothing is cast. Under torch.compile the
three GEMMs and the scale are one region of the UNet graph. Same math: (s·A) x = s·(A x).

Only layers this is exactly equivalent for are patched: plain nn.Linear base, one active adapter, no dropout (module
or hook), no DoRA, not merged. Everything else keeps peft's forward.
"""

from __future__ import annotations

import types

import torch
from torch import nn

ADAPTER = "default"


def lora_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, down: torch.Tensor, up: torch.Tensor, scale: float
) -> torch.Tensor:
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    y = torch.addmm(bias, x2, weight.t()) if bias is not None else torch.mm(x2, weight.t())
    h = torch.mm(x2, (down * scale).t())
    y = torch.addmm(y, h, up.t())
    return y.view(*shape[:-1], y.shape[-1])


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    if self.disable_adapters or self.merged or list(self.active_adapters) != [ADAPTER]:
        return self._peft_forward(x, *args, **kwargs)
    base = self.base_layer
    return lora_linear(
        x, base.weight, base.bias, self.lora_A[ADAPTER].weight, self.lora_B[ADAPTER].weight, self.scaling[ADAPTER]
    )


def fusable(module: nn.Module) -> bool:
    from peft.tuners.lora.layer import Linear as LoraLinear

    if not isinstance(module, LoraLinear) or type(module.get_base_layer()) is not nn.Linear:
        return False
    if ADAPTER not in module.lora_A or getattr(module, "fan_in_fan_out", False):
        return False
    if module.use_dora.get(ADAPTER, False) or module.merged:
        return False
    dropout = module.lora_dropout[ADAPTER] if ADAPTER in module.lora_dropout else nn.Identity()
    if not isinstance(dropout, nn.Identity):
        return False
    # Hooks change what a part computes (kohya's network/rank dropout is a forward hook on lora_A, lora.py), and
    # the fused path calls no part: such a layer keeps peft's forward, which runs them.
    parts = (module.lora_A[ADAPTER], module.lora_B[ADAPTER], module.get_base_layer(), module)
    return not any(m._forward_hooks or m._forward_pre_hooks for m in parts)


def fuse_lora_layers(model: nn.Module) -> int:
    """Give every fusable LoRA linear of `model` the fused forward (an instance attribute; the class and other
    models are untouched). Returns how many layers were patched."""
    count = 0
    for module in model.modules():
        if fusable(module) and not hasattr(module, "_peft_forward"):
            module._peft_forward = module.forward
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count


def unfuse_lora_layers(model: nn.Module) -> int:
    count = 0
    for module in model.modules():
        if hasattr(module, "_peft_forward"):
            module.forward = module._peft_forward
            del module._peft_forward
            count += 1
    return count
