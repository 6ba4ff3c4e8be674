"""LoRA on the Flux transformer (peft), and the two file layouts: kohya/ComfyUI (BFL names, fused modules) and
diffusers/PEFT (`transformer.<path>.lora_A/B.weight`).

A LoRA trained on diffusers' separate q, k, v (and a single block's MLP input) is written onto BFL's fused module
exactly, the way kohya's lora_flux saves its `split_qkv` LoRAs: the downs stacked (rank n·r), the ups placed
block-diagonally, alpha n·alpha so that alpha/rank — the scale every loader applies — is unchanged. Parts that were
not trained (a single block's MLP under `attention`) get zero rows. Loaders recover the parts exactly: diffusers'
kohya converter detects the block-diagonal ("sparse") up and splits it back.
"""

from __future__ import annotations

import re

import torch
from peft import LoraConfig, inject_adapter_in_model

from lorarun.image.engine.flux.keys import bfl_target, target_regex
from lorarun.image.engine.lora import ADAPTER

_PEFT_KEY = re.compile(r"^(?P<module>.+)\.(?P<which>lora_A|lora_B)(?:\.[^.]+)?\.weight$")


def add_flux_lora(transformer, rank: int, alpha: float, target: str) -> list[torch.nn.Parameter]:
    """Freeze the transformer and inject LoRA on `target`'s layers; LoRA parameters in fp32 (the base may be bf16 or
    bitsandbytes-quantised: the adapters stay unquantised)."""
    transformer.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_regex(target), init_lora_weights=True)
    try:
        inject_adapter_in_model(config, transformer, adapter_name=ADAPTER)
    except ValueError as exc:  # peft: "Target modules … not found in the base model"
        raise RuntimeError(f"LoRA target {target!r} matches no layer of this Flux transformer ({exc})") from None
    params = [p for n, p in transformer.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def _pairs(peft_sd: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in peft_sd.items():
        m = _PEFT_KEY.match(key)
        if not m:
            raise ValueError(f"not a PEFT LoRA weight key: {key!r}")
        found.setdefault(m["module"], {})[m["which"]] = value
    out = {}
    for path, ab in found.items():
        if set(ab) != {"lora_A", "lora_B"}:
            raise ValueError(f"LoRA module {path!r} lacks one of its two matrices")
        out[path] = (ab["lora_A"], ab["lora_B"])
    return out


def out_features(transformer) -> dict[str, int]:
    """Output width of every linear layer (LoRA-wrapped or not), by module path."""
    widths = {}
    for name, module in transformer.named_modules():
        base = getattr(module, "base_layer", module)
        if isinstance(base, torch.nn.Linear) or hasattr(base, "out_features"):
            widths[name.removesuffix(".base_layer")] = int(base.out_features)
    return widths


def kohya_flux_state_dict(
    peft_sd: dict[str, torch.Tensor], widths: dict[str, int], alpha: float, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """`lora_unet_<BFL module>.lora_down.weight` / `.lora_up.weight` / `.alpha` (kohya/ComfyUI Flux naming).
    `widths`: `out_features(transformer)`, for the zero rows of parts that carry no LoRA."""
    pairs = _pairs(peft_sd)
    groups: dict[str, list] = {}
    for path in sorted(pairs):
        target = bfl_target(path)
        groups.setdefault(target.kohya_name, [target, []])[1].append(path)
    out: dict[str, torch.Tensor] = {}
    for name, (target, _) in sorted(groups.items()):
        downs, blocks, rows = [], [], []
        for sibling in target.siblings:
            if sibling in pairs:
                a, b = pairs[sibling]
                downs.append(a.detach().float())
                blocks.append(b.detach().float())
            else:
                blocks.append(None)
            rows.append(widths[sibling] if sibling not in pairs else pairs[sibling][1].shape[0])
        down = torch.cat(downs, dim=0)
        up = torch.zeros(sum(rows), down.shape[0], dtype=down.dtype, device=down.device)
        row = col = 0
        for b, height in zip(blocks, rows):
            if b is not None:
                up[row : row + height, col : col + b.shape[1]] = b
                col += b.shape[1]
            row += height
        out[f"{name}.lora_down.weight"] = down.to("cpu", dtype).contiguous()
        out[f"{name}.lora_up.weight"] = up.to("cpu", dtype).contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(alpha) * len(downs), dtype=dtype)
    return out


def diffusers_flux_state_dict(
    peft_sd: dict[str, torch.Tensor], rank: int, alpha: float, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """`transformer.<path>.lora_A.weight` / `.lora_B.weight`, the layout diffusers' `save_lora_weights` writes and
    ComfyUI reads for Flux. That layout has no alpha (loaders use scale 1), so alpha/rank is folded into lora_B."""
    scale = float(alpha) / rank
    out = {}
    for path, (a, b) in sorted(_pairs(peft_sd).items()):
        out[f"transformer.{path}.lora_A.weight"] = a.detach().to("cpu", dtype).contiguous()
        out[f"transformer.{path}.lora_B.weight"] = (b.detach().float() * scale).to("cpu", dtype).contiguous()
    return out
