"""ComfyUI's Flux LoRA key map, restated for tests (not imported from lorarun, so the engine's own table is checked
against an independent statement of the same facts).

Source: comfyanonymous/ComfyUI `comfy/utils.py::flux_to_diffusers` (diffusers weight → BFL weight, with
(dim, offset, size) slices where BFL fuses layers) and `comfy/lora.py::model_lora_keys_unet` (every BFL weight
`diffusion_model.<path>.weight` is reachable as `lora_unet_<path with "." → "_">`). ComfyUI applies up @ down to the
BFL weight, so the LoRA's (out, in) must be the BFL weight's shape.
"""

from __future__ import annotations


def diffusers_to_bfl(num_double: int, num_single: int, hidden: int, mlp_hidden: int) -> dict[str, tuple[str, int, int]]:
    """diffusers Linear path → (BFL weight path without .weight, row offset, rows)."""
    out: dict[str, tuple[str, int, int]] = {}
    for i in range(num_double):
        d, b = f"transformer_blocks.{i}", f"double_blocks.{i}"
        for n, q in enumerate(("to_q", "to_k", "to_v")):
            out[f"{d}.attn.{q}"] = (f"{b}.img_attn.qkv", n * hidden, hidden)
        for n, q in enumerate(("add_q_proj", "add_k_proj", "add_v_proj")):
            out[f"{d}.attn.{q}"] = (f"{b}.txt_attn.qkv", n * hidden, hidden)
        for src, dst in (
            ("attn.to_out.0", "img_attn.proj"),
            ("norm1.linear", "img_mod.lin"),
            ("norm1_context.linear", "txt_mod.lin"),
            ("attn.to_add_out", "txt_attn.proj"),
            ("ff.net.0.proj", "img_mlp.0"),
            ("ff.net.2", "img_mlp.2"),
            ("ff_context.net.0.proj", "txt_mlp.0"),
            ("ff_context.net.2", "txt_mlp.2"),
        ):
            out[f"{d}.{src}"] = (f"{b}.{dst}", 0, -1)
    for i in range(num_single):
        d, b = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        for n, q in enumerate(("to_q", "to_k", "to_v")):
            out[f"{d}.attn.{q}"] = (f"{b}.linear1", n * hidden, hidden)
        out[f"{d}.proj_mlp"] = (f"{b}.linear1", 3 * hidden, mlp_hidden)
        out[f"{d}.norm.linear"] = (f"{b}.modulation.lin", 0, -1)
        out[f"{d}.proj_out"] = (f"{b}.linear2", 0, -1)
    return out


def bfl_shapes(transformer) -> dict[str, tuple[int, int]]:
    """`lora_unet_<BFL path>` → (out, in) of that BFL weight, for a diffusers FluxTransformer2DModel."""
    cfg = transformer.config
    hidden = cfg.num_attention_heads * cfg.attention_head_dim
    mlp_hidden = (
        int(transformer.single_transformer_blocks[0].proj_mlp.out_features) if cfg.num_single_layers else 4 * hidden
    )
    table = diffusers_to_bfl(cfg.num_layers, cfg.num_single_layers, hidden, mlp_hidden)
    modules = dict(transformer.named_modules())
    shapes: dict[str, list[int]] = {}
    for path, (bfl, offset, rows) in table.items():
        module = modules[path]
        module = getattr(module, "base_layer", module)
        rows = module.out_features if rows == -1 else rows
        assert module.out_features == rows, (path, module.out_features, rows)
        entry = shapes.setdefault("lora_unet_" + bfl.replace(".", "_"), [0, module.in_features])
        entry[0] = max(entry[0], offset + rows)
        assert entry[1] == module.in_features
    return {k: (v[0], v[1]) for k, v in shapes.items()}
