"""kohya key conversion: pure functions, no torch."""

import pytest

from lorarun.image.engine.kohya_keys import (
    is_conv3x3_target,
    plan_modules,
    sgm_unet_path,
    te_prefixes,
    text_encoder_module_name,
    unet_module_name,
)


@pytest.mark.parametrize(
    "diffusers_path, sgm",
    [
        # Real SDXL (layers_per_block 2): kohya's make_unet_conversion_map / A1111 arithmetic
        ("down_blocks.1.attentions.0.proj_in", "input_blocks.4.1.proj_in"),
        (
            "down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q",
            "input_blocks.5.1.transformer_blocks.0.attn1.to_q",
        ),
        ("down_blocks.2.attentions.0.transformer_blocks.9.ff.net.2", "input_blocks.7.1.transformer_blocks.9.ff.net.2"),
        ("down_blocks.2.attentions.1.proj_out", "input_blocks.8.1.proj_out"),
        ("mid_block.attentions.0.transformer_blocks.9.ff.net.2", "middle_block.1.transformer_blocks.9.ff.net.2"),
        ("up_blocks.0.attentions.0.proj_out", "output_blocks.0.1.proj_out"),
        (
            "up_blocks.0.attentions.2.transformer_blocks.1.attn2.to_out.0",
            "output_blocks.2.1.transformer_blocks.1.attn2.to_out.0",
        ),
        ("up_blocks.1.attentions.2.proj_in", "output_blocks.5.1.proj_in"),
    ],
)
def test_sdxl_sgm_paths(diffusers_path, sgm):
    assert sgm_unet_path(diffusers_path, layers_per_block=2) == sgm


def _kohya_sdxl_layer_map() -> list[tuple[str, str]]:
    """kohya sd-scripts library/sdxl_model_util.py::make_unet_conversion_map, the layer and resnet parts,
    transcribed: (sgm prefix, diffusers prefix)."""
    layer = []
    for i in range(3):
        for j in range(2):
            layer.append((f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
        for j in range(3):
            layer.append((f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
        layer.append((f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
        layer.append((f"output_blocks.{3 * i + 2}.{2}.", f"up_blocks.{i}.upsamplers.0."))
    for j in range(2):
        layer.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return layer


RESNET_MAP = [
    ("in_layers.2.", "conv1."),
    ("out_layers.3.", "conv2."),
    ("emb_layers.1.", "time_emb_proj."),
    ("skip_connection.", "conv_shortcut."),
]


def test_sdxl_resnet_and_sampler_paths_follow_kohyas_conversion_map():
    """Every LoCon target path of the real SDXL UNet maps to the SGM name kohya's own conversion map gives."""
    checked = 0
    for sgm_prefix, hf_prefix in _kohya_sdxl_layer_map():
        if "resnets" in hf_prefix:
            for sgm_part, hf_part in RESNET_MAP:
                path = (hf_prefix + hf_part).rstrip(".")
                assert sgm_unet_path(path, 2) == (sgm_prefix + sgm_part).rstrip(".")
                checked += 1
        else:
            path = hf_prefix.rstrip(".") + ("" if hf_prefix.endswith("conv.") else ".conv")
            sgm = sgm_prefix.rstrip(".") + ("" if sgm_prefix.endswith("op.") else ".conv")
            assert sgm_unet_path(path, 2) == sgm
            checked += 1
    assert checked == (6 + 9 + 2) * 4 + 6


def test_locon_targets_and_names():
    assert is_conv3x3_target("down_blocks.0.resnets.1.conv2") and is_conv3x3_target("up_blocks.1.upsamplers.0.conv")
    assert not is_conv3x3_target("down_blocks.0.resnets.1.conv_shortcut")
    assert not is_conv3x3_target("down_blocks.0.resnets.1.time_emb_proj")
    assert unet_module_name("down_blocks.0.resnets.0.conv1", "sd15") == "lora_unet_down_blocks_0_resnets_0_conv1"
    assert unet_module_name("down_blocks.1.downsamplers.0.conv", "sdxl") == "lora_unet_input_blocks_6_0_op"


def test_sgm_rejects_paths_outside_the_blocks():
    with pytest.raises(ValueError):
        sgm_unet_path("conv_in")


def test_unet_names_per_family():
    path = "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0"
    assert unet_module_name(path, "sd15") == "lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_out_0"
    assert (
        unet_module_name("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k", "sdxl")
        == "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k"
    )
    assert (
        unet_module_name("mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj", "sd15")
        == "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj"
    )


def test_text_encoder_names_have_text_model_with_and_without_prefix():
    # transformers >= 5 (no text_model level) and < 5 give the same kohya name
    assert (
        text_encoder_module_name("encoder.layers.0.self_attn.q_proj", "lora_te")
        == "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    )
    assert (
        text_encoder_module_name("text_model.encoder.layers.11.mlp.fc2", "lora_te1")
        == "lora_te1_text_model_encoder_layers_11_mlp_fc2"
    )
    assert te_prefixes("sd15") == ("lora_te",)
    assert te_prefixes("sdxl") == ("lora_te1", "lora_te2")


def test_plan_pairs_down_and_up():
    keys = ["encoder.layers.0.self_attn.out_proj.lora_A.weight", "encoder.layers.0.self_attn.out_proj.lora_B.weight"]
    (module,) = plan_modules(keys, "lora_te2", "sdxl")
    assert module.name == "lora_te2_text_model_encoder_layers_0_self_attn_out_proj"
    assert module.down_key.endswith("lora_A.weight") and module.up_key.endswith("lora_B.weight")


def test_plan_rejects_half_modules_and_foreign_keys():
    with pytest.raises(ValueError, match="lacks"):
        plan_modules(["encoder.layers.0.mlp.fc1.lora_A.weight"], "lora_te", "sd15")
    with pytest.raises(ValueError, match="not a PEFT"):
        plan_modules(["encoder.layers.0.mlp.fc1.weight"], "lora_te", "sd15")
