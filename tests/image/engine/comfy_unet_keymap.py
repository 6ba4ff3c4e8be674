"""ComfyUI's SD/SDXL UNet LoRA key map, restated for tests (not imported from lorarun, so the engine's names are
checked against an independent statement of the same facts).

Source: Comfy-Org/ComfyUI v0.26.1 `comfy/utils.py::unet_to_diffusers` (diffusers weight → SGM weight, the resnet,
attention and sampler parts, transcribed below) and `comfy/lora.py::model_lora_keys_unet`, which makes every UNet
weight reachable as `lora_unet_<SGM path with "." → "_">` (from the model's own state dict) and as
`lora_unet_<diffusers path with "." → "_">` (from this map). The unet configs are ComfyUI's for SD1.5 and SDXL.
"""

from __future__ import annotations

UNET_MAP_ATTENTIONS = {"proj_in.weight", "proj_out.weight", "norm.weight"}
TRANSFORMER_BLOCKS = {
    "attn1.to_q.weight",
    "attn1.to_k.weight",
    "attn1.to_v.weight",
    "attn1.to_out.0.weight",
    "attn2.to_q.weight",
    "attn2.to_k.weight",
    "attn2.to_v.weight",
    "attn2.to_out.0.weight",
    "ff.net.0.proj.weight",
    "ff.net.2.weight",
    "norm1.weight",
    "norm2.weight",
    "norm3.weight",
}
UNET_MAP_RESNET = {
    "in_layers.2.weight": "conv1.weight",
    "emb_layers.1.weight": "time_emb_proj.weight",
    "out_layers.3.weight": "conv2.weight",
    "skip_connection.weight": "conv_shortcut.weight",
    "in_layers.0.weight": "norm1.weight",
    "out_layers.0.weight": "norm2.weight",
}

SD15 = dict(
    num_res_blocks=[2, 2, 2, 2],
    channel_mult=[1, 2, 4, 4],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    transformer_depth_middle=1,
)
SDXL = dict(
    num_res_blocks=[2, 2, 2],
    channel_mult=[1, 2, 4],
    transformer_depth=[0, 0, 2, 2, 10, 10],
    transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
    transformer_depth_middle=10,
)


def unet_to_diffusers(unet_config: dict) -> dict[str, str]:
    num_res_blocks = unet_config["num_res_blocks"]
    channel_mult = unet_config["channel_mult"]
    transformer_depth = unet_config["transformer_depth"][:]
    transformer_depth_output = unet_config["transformer_depth_output"][:]
    num_blocks = len(channel_mult)
    transformers_mid = unet_config.get("transformer_depth_middle", None)
    m = {}
    for x in range(num_blocks):
        n = 1 + (num_res_blocks[x] + 1) * x
        for i in range(num_res_blocks[x]):
            for b in UNET_MAP_RESNET:
                m[f"down_blocks.{x}.resnets.{i}.{UNET_MAP_RESNET[b]}"] = f"input_blocks.{n}.0.{b}"
            num_transformers = transformer_depth.pop(0)
            if num_transformers > 0:
                for b in UNET_MAP_ATTENTIONS:
                    m[f"down_blocks.{x}.attentions.{i}.{b}"] = f"input_blocks.{n}.1.{b}"
                for t in range(num_transformers):
                    for b in TRANSFORMER_BLOCKS:
                        m[f"down_blocks.{x}.attentions.{i}.transformer_blocks.{t}.{b}"] = (
                            f"input_blocks.{n}.1.transformer_blocks.{t}.{b}"
                        )
            n += 1
        m[f"down_blocks.{x}.downsamplers.0.conv.weight"] = f"input_blocks.{n}.0.op.weight"
    for b in UNET_MAP_ATTENTIONS:
        m[f"mid_block.attentions.0.{b}"] = f"middle_block.1.{b}"
    for t in range(transformers_mid):
        for b in TRANSFORMER_BLOCKS:
            m[f"mid_block.attentions.0.transformer_blocks.{t}.{b}"] = f"middle_block.1.transformer_blocks.{t}.{b}"
    for i, n in enumerate([0, 2]):
        for b in UNET_MAP_RESNET:
            m[f"mid_block.resnets.{i}.{UNET_MAP_RESNET[b]}"] = f"middle_block.{n}.{b}"
    num_res_blocks = list(reversed(num_res_blocks))
    for x in range(num_blocks):
        n = (num_res_blocks[x] + 1) * x
        length = num_res_blocks[x] + 1
        for i in range(length):
            c = 0
            for b in UNET_MAP_RESNET:
                m[f"up_blocks.{x}.resnets.{i}.{UNET_MAP_RESNET[b]}"] = f"output_blocks.{n}.0.{b}"
            c += 1
            num_transformers = transformer_depth_output.pop()
            if num_transformers > 0:
                c += 1
                for b in UNET_MAP_ATTENTIONS:
                    m[f"up_blocks.{x}.attentions.{i}.{b}"] = f"output_blocks.{n}.1.{b}"
                for t in range(num_transformers):
                    for b in TRANSFORMER_BLOCKS:
                        m[f"up_blocks.{x}.attentions.{i}.transformer_blocks.{t}.{b}"] = (
                            f"output_blocks.{n}.1.transformer_blocks.{t}.{b}"
                        )
            if i == length - 1:
                m[f"up_blocks.{x}.upsamplers.0.conv.weight"] = f"output_blocks.{n}.{c}.conv.weight"
            n += 1
    return m


def lora_key_map(unet_config: dict) -> dict[str, str]:
    """model_lora_keys_unet: kohya LoRA module name → the diffusers weight it patches (both spellings)."""
    keys = {}
    for diffusers_weight, sgm_weight in unet_to_diffusers(unet_config).items():
        keys["lora_unet_" + sgm_weight[: -len(".weight")].replace(".", "_")] = diffusers_weight
        keys["lora_unet_" + diffusers_weight[: -len(".weight")].replace(".", "_")] = diffusers_weight
    return keys
