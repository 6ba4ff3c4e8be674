"""PEFT/diffusers LoRA names → kohya sd-scripts names. Pure functions, no torch (engine.md §3.1, §3.4).

kohya names a LoRA module `<prefix>_<module path with "." → "_">` and stores `<name>.lora_down.weight`,
`<name>.lora_up.weight`, `<name>.alpha`. The module path is:
- SD1.x/2.x UNet: the diffusers path (kohya's original_unet mirrors diffusers);
- SDXL UNet: the SGM/LDM path (`input_blocks.4.1…`, `middle_block.1…`, `output_blocks.0.1…`), because kohya builds
  SDXL from `sdxl_original_unet.py` and A1111/ComfyUI expect those names;
- text encoders: `text_model.<path>` under `lora_te` (SD1/2), `lora_te1` / `lora_te2` (SDXL). transformers ≥ 5
  dropped the `text_model.` level from CLIPTextModel, so it is put back here, or no UI would match the keys.
We write the true alpha ourselves; diffusers' `convert_state_dict_to_kohya` writes alpha = rank (trap 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
# LoCon (kohya networks.lora with network_args conv_dim): with conv_dim set, kohya also targets every Linear and
# Conv2d inside ResnetBlock2D / Downsample2D / Upsample2D (`UNET_TARGET_REPLACE_MODULE_CONV2D_3X3`); the 3x3 convs get
# conv_dim/conv_alpha, the Linear (time_emb_proj) and 1x1 conv (conv_shortcut) get network_dim/network_alpha.
UNET_CONV3X3_TARGETS = ("conv1", "conv2", "downsamplers.0.conv", "upsamplers.0.conv")
UNET_RESNET_OTHER_TARGETS = ("time_emb_proj", "conv_shortcut")

_PEFT_KEY = re.compile(r"^(?P<module>.+)\.(?P<which>lora_A|lora_B)(?:\.(?P<adapter>[^.]+))?\.weight$")
_DOWN = re.compile(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$")
_MID = re.compile(r"^mid_block\.attentions\.0\.(.+)$")
_UP = re.compile(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$")
_DOWN_RES = re.compile(r"^down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$")
_MID_RES = re.compile(r"^mid_block\.resnets\.(\d+)\.(.+)$")
_UP_RES = re.compile(r"^up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$")
_DOWNSAMPLE = re.compile(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv$")
_UPSAMPLE = re.compile(r"^up_blocks\.(\d+)\.upsamplers\.0\.conv$")
# kohya sdxl_model_util.make_unet_conversion_map, resnet part: (diffusers, SGM)
_RESNET_SGM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def is_conv3x3_target(path: str) -> bool:
    """Whether a UNet module path is one of LoCon's 3x3 convs (conv_dim / conv_alpha apply)."""
    return any(path == t or path.endswith("." + t) for t in UNET_CONV3X3_TARGETS)


def te_prefixes(family: str) -> tuple[str, ...]:
    """kohya's text-encoder prefixes, in pipeline order (text_encoder, text_encoder_2)."""
    return ("lora_te1", "lora_te2") if family == "sdxl" else ("lora_te",)


def sgm_unet_path(diffusers_path: str, layers_per_block: int = 2) -> str:
    """diffusers UNet path of a module inside an attention block → SGM path (kohya's `make_unet_conversion_map`).

    Down block i has `layers_per_block` layers plus a downsampler, so `input_blocks` advance by
    layers_per_block + 1 per level (3 in SDXL); index 0 is conv_in. Up blocks have one layer more.
    """
    lpb = layers_per_block
    if m := _DOWN_RES.match(diffusers_path):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{i * (lpb + 1) + j + 1}.0.{_RESNET_SGM.get(rest, rest)}"
    if m := _MID_RES.match(diffusers_path):
        return f"middle_block.{2 * int(m[1])}.{_RESNET_SGM.get(m[2], m[2])}"
    if m := _UP_RES.match(diffusers_path):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{i * (lpb + 1) + j}.0.{_RESNET_SGM.get(rest, rest)}"
    if m := _DOWNSAMPLE.match(diffusers_path):
        return f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op"
    if m := _UPSAMPLE.match(diffusers_path):
        # kohya's map puts every SDXL upsampler at sub-index 2 (its up blocks with upsamplers all have attentions)
        return f"output_blocks.{int(m[1]) * (lpb + 1) + lpb}.2.conv"
    if m := _DOWN.match(diffusers_path):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{i * (lpb + 1) + j + 1}.1.{rest}"
    if m := _MID.match(diffusers_path):
        return f"middle_block.1.{m[1]}"
    if m := _UP.match(diffusers_path):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{i * (lpb + 1) + j}.1.{rest}"
    raise ValueError(f"not a UNet attention/resnet/sampler path: {diffusers_path!r}")


def unet_module_name(diffusers_path: str, family: str, layers_per_block: int = 2) -> str:
    path = sgm_unet_path(diffusers_path, layers_per_block) if family == "sdxl" else diffusers_path
    return "lora_unet_" + path.replace(".", "_")


def text_encoder_module_name(path: str, prefix: str) -> str:
    """`encoder.layers.0.self_attn.q_proj` (transformers ≥ 5) or `text_model.encoder…` (< 5) →
    `<prefix>_text_model_encoder_layers_0_self_attn_q_proj`."""
    if path.startswith("text_model."):
        path = path[len("text_model.") :]
    return f"{prefix}_text_model_" + path.replace(".", "_")


@dataclass(frozen=True)
class KohyaModule:
    name: str  # kohya module name, e.g. lora_unet_down_blocks_0_attentions_0_proj_in
    down_key: str  # PEFT key of lora_A (→ <name>.lora_down.weight)
    up_key: str  # PEFT key of lora_B (→ <name>.lora_up.weight)
    path: str = ""  # the module's path in the model (diffusers / transformers naming)


def plan_modules(peft_keys: list[str], component: str, family: str, layers_per_block: int = 2) -> list[KohyaModule]:
    """Pair up the lora_A/lora_B keys of one model's PEFT state dict and name each module the kohya way.

    component: "unet", or a text-encoder prefix from `te_prefixes` ("lora_te", "lora_te1", "lora_te2").
    Raises ValueError on a key that is not a LoRA weight or a module with only one of its two matrices.
    """
    pairs: dict[str, dict[str, str]] = {}
    for key in peft_keys:
        m = _PEFT_KEY.match(key)
        if not m:
            raise ValueError(f"not a PEFT LoRA weight key: {key!r}")
        pairs.setdefault(m["module"], {})[m["which"]] = key
    modules = []
    for path, found in sorted(pairs.items()):
        if set(found) != {"lora_A", "lora_B"}:
            raise ValueError(f"LoRA module {path!r} lacks {({'lora_A', 'lora_B'} - set(found)).pop()}")
        if component == "unet":
            name = unet_module_name(path, family, layers_per_block)
        else:
            name = text_encoder_module_name(path, component)
        modules.append(KohyaModule(name=name, down_key=found["lora_A"], up_key=found["lora_B"], path=path))
    names = [m.name for m in modules]
    if len(set(names)) != len(names):
        raise ValueError("two LoRA modules map to the same kohya name")
    return modules


def kohya_tensor_keys(module_name: str) -> tuple[str, str, str]:
    return f"{module_name}.lora_down.weight", f"{module_name}.lora_up.weight", f"{module_name}.alpha"
