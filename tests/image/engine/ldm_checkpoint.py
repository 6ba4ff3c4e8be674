"""Write a diffusers SD1.x / SDXL pipeline as an original (LDM / SGM, A1111-style) single-file checkpoint — the
inverse of diffusers' `from_single_file` conversion, for testing that path offline with the tiny models. Follows the
classic `convert_diffusers_to_original_stable_diffusion.py` / `..._sdxl.py` tables, generalised to any
layers_per_block; SDXL's second text encoder is written in OpenCLIP layout (fused q/k/v `in_proj`)."""

from __future__ import annotations

import re

RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
UNET_SIMPLE = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{RESNET.get(head, head)}.{tail}"


def unet_to_ldm(sd: dict, config) -> dict:
    L = config.layers_per_block
    up_has_attn = ["CrossAttn" in t for t in config.up_block_types]
    out = {}
    for key, value in sd.items():
        new = None
        for a, b in UNET_SIMPLE.items():
            if key.startswith(a + "."):
                new = b + key[len(a) :]
        if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"input_blocks.{int(m[1]) * (L + 1) + int(m[2]) + 1}.0.{_resnet(m[3])}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            new = f"input_blocks.{int(m[1]) * (L + 1) + int(m[2]) + 1}.1.{m[3]}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"input_blocks.{(int(m[1]) + 1) * (L + 1)}.0.op.{m[2]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"output_blocks.{int(m[1]) * (L + 1) + int(m[2])}.0.{_resnet(m[3])}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            new = f"output_blocks.{int(m[1]) * (L + 1) + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            i = int(m[1])
            new = f"output_blocks.{i * (L + 1) + L}.{2 if up_has_attn[i] else 1}.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
            new = f"middle_block.1.{m[1]}"
        if new is None:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(sd: dict, n_blocks: int) -> dict:
    out = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for key, value in sd.items():
        new = key
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(
            r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
            lambda m: f"decoder.up.{n_blocks - 1 - int(m[1])}.block.{m[2]}.",
            new,
        )
        new = re.sub(
            r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
            lambda m: f"decoder.up.{n_blocks - 1 - int(m[1])}.upsample.",
            new,
        )
        new = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", new)
        new = new.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$", new):
            new = f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
            if m[3] == "weight" and value.ndim == 2:
                value = value[:, :, None, None]  # LDM's attention uses 1x1 convs
        out["first_stage_model." + new] = value
    return out


def text_encoder_to_ldm(sd: dict) -> dict:
    return {
        "cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
        for k, v in sd.items()
    }


def open_clip_to_ldm(sd: dict, prefix: str = "conditioner.embedders.1.model.") -> dict:
    """CLIPTextModelWithProjection → OpenCLIP text tower (what SDXL checkpoints store for CLIP-G)."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out = {
        "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
        "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
        "ln_final.weight": sd.pop("final_layer_norm.weight"),
        "ln_final.bias": sd.pop("final_layer_norm.bias"),
        "text_projection": sd.pop("text_projection.weight").T,
    }
    sd.pop("embeddings.position_ids", None)
    layers = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")}
    for i in sorted(layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch_cat(
                [sd.pop(src + f"self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")]
            )
            out[dst + f"attn.out_proj.{kind}"] = sd.pop(src + f"self_attn.out_proj.{kind}")
            out[dst + f"ln_1.{kind}"] = sd.pop(src + f"layer_norm1.{kind}")
            out[dst + f"ln_2.{kind}"] = sd.pop(src + f"layer_norm2.{kind}")
            out[dst + f"mlp.c_fc.{kind}"] = sd.pop(src + f"mlp.fc1.{kind}")
            out[dst + f"mlp.c_proj.{kind}"] = sd.pop(src + f"mlp.fc2.{kind}")
    if sd:
        raise KeyError(f"unconverted text-encoder keys: {sorted(sd)[:3]}")
    return {prefix + k: v for k, v in out.items()}


def torch_cat(tensors):
    import torch

    return torch.cat(tensors, dim=0)


def pipeline_to_ldm(pipe) -> dict:
    sd = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    sd.update(vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels)))
    if hasattr(pipe, "text_encoder_2"):  # SDXL: SGM "conditioner" layout
        sd.update(
            {
                k.replace("cond_stage_model.", "conditioner.embedders.0."): v
                for k, v in text_encoder_to_ldm(pipe.text_encoder.state_dict()).items()
            }
        )
        sd.update(open_clip_to_ldm(pipe.text_encoder_2.state_dict()))
    else:
        sd.update(text_encoder_to_ldm(pipe.text_encoder.state_dict()))
    return {k: v.contiguous() for k, v in sd.items()}
