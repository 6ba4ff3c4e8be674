"""diffusers Flux module paths → BFL/kohya/ComfyUI LoRA names, and the LoRA target sets. Pure functions, no torch.

BFL's checkpoint (and so ComfyUI, kohya's `networks/lora_flux.py` and every Flux LoRA in the wild) fuses what
diffusers keeps apart: a double block's `img_attn.qkv` is diffusers' `attn.to_q|to_k|to_v` stacked on the output
axis, `txt_attn.qkv` is `attn.add_q_proj|add_k_proj|add_v_proj`, and a single block's `linear1` is
`attn.to_q|to_k|to_v|proj_mlp`. The map below is the one ComfyUI uses to load diffusers-named Flux weights
(`comfy/utils.py::flux_to_diffusers`) and diffusers uses to load kohya-named Flux LoRAs
(`loaders/lora_conversion_utils.py::_convert_kohya_flux_lora_to_diffusers`). A kohya module name is
`lora_unet_<BFL module path with "." → "_">` (ComfyUI `comfy/lora.py::model_lora_keys_unet` accepts exactly that for
every weight of the model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# module path inside transformer_blocks.{i} → (BFL path inside double_blocks.{i}, part index, parts)
DOUBLE = {
    "attn.to_q": ("img_attn.qkv", 0, 3),
    "attn.to_k": ("img_attn.qkv", 1, 3),
    "attn.to_v": ("img_attn.qkv", 2, 3),
    "attn.add_q_proj": ("txt_attn.qkv", 0, 3),
    "attn.add_k_proj": ("txt_attn.qkv", 1, 3),
    "attn.add_v_proj": ("txt_attn.qkv", 2, 3),
    "attn.to_out.0": ("img_attn.proj", 0, 1),
    "attn.to_add_out": ("txt_attn.proj", 0, 1),
    "ff.net.0.proj": ("img_mlp.0", 0, 1),
    "ff.net.2": ("img_mlp.2", 0, 1),
    "ff_context.net.0.proj": ("txt_mlp.0", 0, 1),
    "ff_context.net.2": ("txt_mlp.2", 0, 1),
    "norm1.linear": ("img_mod.lin", 0, 1),
    "norm1_context.linear": ("txt_mod.lin", 0, 1),
}
# module path inside single_transformer_blocks.{i} → (BFL path inside single_blocks.{i}, part index, parts)
SINGLE = {
    "attn.to_q": ("linear1", 0, 4),
    "attn.to_k": ("linear1", 1, 4),
    "attn.to_v": ("linear1", 2, 4),
    "proj_mlp": ("linear1", 3, 4),
    "proj_out": ("linear2", 0, 1),
    "norm.linear": ("modulation.lin", 0, 1),
}
_DOUBLE_ATTN = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
)
_DOUBLE_MLP = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
_DOUBLE_MOD = ("norm1.linear", "norm1_context.linear")


def _alt(paths) -> str:
    return "|".join(re.escape(p) for p in paths)


def target_regex(target: str) -> str:
    """peft `target_modules` (a regex matched against the full module name) for a network target.

    all: every linear layer of the double and single blocks (kohya lora_flux's default, ai-toolkit's set);
    attention: q/k/v/out of both streams and the single blocks' q/k/v (SimpleTuner's `mmdit`/`all`);
    mlp: the feed-forward layers of both streams and the single blocks' MLP input;
    tiny: the output projection of single blocks 7 and 20 only (TheLastBen's tiny LoRA, SimpleTuner `tiny`).
    """
    if target == "all":
        double, single = _DOUBLE_ATTN + _DOUBLE_MLP + _DOUBLE_MOD, tuple(SINGLE)
    elif target == "attention":
        double, single = _DOUBLE_ATTN, ("attn.to_q", "attn.to_k", "attn.to_v")
    elif target == "mlp":
        double, single = _DOUBLE_MLP, ("proj_mlp",)
    elif target == "tiny":
        return r"single_transformer_blocks\.(7|20)\.proj_out"
    else:
        raise ValueError(f"unknown Flux LoRA target {target!r}")
    return rf"(transformer_blocks\.\d+\.({_alt(double)})|single_transformer_blocks\.\d+\.({_alt(single)}))"


_PATH = re.compile(r"^(?P<kind>transformer_blocks|single_transformer_blocks)\.(?P<i>\d+)\.(?P<rest>.+)$")


@dataclass(frozen=True)
class FluxTarget:
    bfl_module: str  # e.g. double_blocks.3.img_attn.qkv
    part: int  # index of this diffusers module inside a fused BFL module
    parts: int
    siblings: tuple[str, ...]  # diffusers paths of every part, in BFL order (this one included)

    @property
    def kohya_name(self) -> str:
        return "lora_unet_" + self.bfl_module.replace(".", "_")


def bfl_target(diffusers_path: str) -> FluxTarget:
    """`transformer_blocks.3.attn.to_k` → double_blocks.3.img_attn.qkv, part 1 of 3."""
    m = _PATH.match(diffusers_path)
    table = DOUBLE if m and m["kind"] == "transformer_blocks" else SINGLE
    if not m or m["rest"] not in table:
        raise ValueError(f"not a Flux LoRA target lorarun can name the BFL way: {diffusers_path!r}")
    bfl, part, parts = table[m["rest"]]
    prefix, block = (
        ("double_blocks", "transformer_blocks") if table is DOUBLE else ("single_blocks", "single_transformer_blocks")
    )
    siblings = sorted((p for p, (b, _, _) in table.items() if b == bfl), key=lambda p: table[p][1])
    return FluxTarget(f"{prefix}.{m['i']}.{bfl}", part, parts, tuple(f"{block}.{m['i']}.{s}" for s in siblings))
