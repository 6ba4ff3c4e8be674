"""Built-in tiny models (`builtin:tiny-sd15`, `builtin:tiny-sdxl`) for tests and the demo.

SD1.5- and SDXL-shaped pipelines built from configs with deterministic random weights: the same module tree, key
names and conditioning paths as the real models (SDXL: two text encoders, cross_attention_dim = h1 + h2, pooled
projection, `text_time` addition embeds; tokenizer_2 pads with "!"), so everything the engine does to a real model
— LoRA targets, kohya key names, caching, sampling — is exercised, in seconds on a CPU. The tokenizer is the real
CLIP BPE tokenizer (vocab 49 408), hence a tiny hidden size keeps the embedding table small.
The VAE has four blocks like the real one, so images downscale by 8 exactly as SD's do.
"""

from __future__ import annotations

from dataclasses import dataclass

TINY_SEED = 20261123
VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(8, 8, 16, 16),
    layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=8,
    sample_size=64,
)
SD15_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=8,
)
SDXL_H1, SDXL_H2, SDXL_TIME_DIM = 32, 48, 8
SDXL_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(16, 32, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 2),
    attention_head_dim=(2, 4, 4),
    use_linear_projection=True,
    cross_attention_dim=SDXL_H1 + SDXL_H2,
    addition_embed_type="text_time",
    addition_time_embed_dim=SDXL_TIME_DIM,
    projection_class_embeddings_input_dim=6 * SDXL_TIME_DIM + SDXL_H2,
    norm_num_groups=8,
)
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    timestep_spacing="leading",
)


def _clip_config(hidden: int, layers: int, act: str, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    from lorarun.image.engine.tokenizer import VOCAB_SIZE

    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_attention_heads=4,
        num_hidden_layers=layers,
        max_position_embeddings=77,
        hidden_act=act,
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=projection_dim or hidden,
    )


@dataclass
class TinyParts:
    unet: object
    vae: object
    text_encoders: list
    tokenizers: list
    scheduler: object


def build_tiny(family: str) -> TinyParts:
    """Deterministic random weights (the same every call, without disturbing the caller's RNG)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from lorarun.image.engine.tokenizer import load_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        if family == "sd15":
            unet = UNet2DConditionModel(**SD15_UNET)
            vae = AutoencoderKL(**VAE, scaling_factor=0.18215)
            encoders = [CLIPTextModel(_clip_config(32, 3, "quick_gelu"))]
            tokenizers = [load_tokenizer("clip_l")]
        elif family == "sdxl":
            unet = UNet2DConditionModel(**SDXL_UNET)
            vae = AutoencoderKL(**VAE, scaling_factor=0.13025)
            encoders = [
                CLIPTextModel(_clip_config(SDXL_H1, 3, "quick_gelu")),
                CLIPTextModelWithProjection(_clip_config(SDXL_H2, 3, "gelu")),
            ]
            tokenizers = [load_tokenizer("clip_l"), load_tokenizer("clip_g")]
        else:
            raise ValueError(f"no tiny model for family {family!r}")
    for module in (unet, vae, *encoders):
        module.eval()
    return TinyParts(unet, vae, encoders, tokenizers, EulerDiscreteScheduler(**SCHEDULER))


def build_tiny_pipeline(family: str):
    """A ready diffusers pipeline (StableDiffusionPipeline / StableDiffusionXLPipeline) of the tiny model; tests
    call `load_lora_weights` on it with a file the engine saved."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    parts = build_tiny(family)
    if family == "sd15":
        return StableDiffusionPipeline(
            vae=parts.vae,
            text_encoder=parts.text_encoders[0],
            tokenizer=parts.tokenizers[0],
            unet=parts.unet,
            scheduler=parts.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return StableDiffusionXLPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoders[0],
        text_encoder_2=parts.text_encoders[1],
        tokenizer=parts.tokenizers[0],
        tokenizer_2=parts.tokenizers[1],
        unet=parts.unet,
        scheduler=parts.scheduler,
    )
