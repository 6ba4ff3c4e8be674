"""Loading the base model's parts: built-in tiny, a diffusers folder, a hub id, or a single-file checkpoint.

Only the parts training needs are kept (UNet, VAE, text encoders, tokenizers, a sampling scheduler). The training
noise schedule is kohya's (DDPM, scaled-linear betas 0.00085…0.012, 1000 steps) whatever the checkpoint ships.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from lorarun.image.engine_config import ModelConfig

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass
class Model:
    family: str
    unet: object
    vae: object
    text_encoders: list
    tokenizers: list
    sample_scheduler: object
    v_prediction: bool
    key: str  # identifies the weights; part of every cache key, so a different base never reuses stale caches

    @property
    def layers_per_block(self) -> int:
        return int(self.unet.config.layers_per_block)

    def pipeline(self):
        """A diffusers pipeline sharing these modules (no copies), for sampling."""
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        if self.family == "sdxl":
            return StableDiffusionXLPipeline(
                vae=self.vae,
                text_encoder=self.text_encoders[0],
                text_encoder_2=self.text_encoders[1],
                tokenizer=self.tokenizers[0],
                tokenizer_2=self.tokenizers[1],
                unet=self.unet,
                scheduler=self.sample_scheduler,
            )
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoders[0],
            tokenizer=self.tokenizers[0],
            unet=self.unet,
            scheduler=self.sample_scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def load_model(mcfg: ModelConfig, asset_cache: Path | None = None) -> Model:
    base = mcfg.base
    v_pred = bool(mcfg.v_parameterization)
    if base.startswith("builtin:"):
        from lorarun.image.engine.tiny import build_tiny

        family = base.split("-", 1)[1]
        parts = build_tiny(family)
        model = Model(
            family,
            parts.unet,
            parts.vae,
            parts.text_encoders,
            parts.tokenizers,
            parts.scheduler,
            v_pred,
            key=f"{base}@1",
        )
    elif Path(base).suffix.lower() in SINGLE_FILE_SUFFIXES:
        model = _load_single_file(mcfg, Path(base), asset_cache)
    else:
        model = _load_diffusers(mcfg, base)
    if mcfg.vae:
        from diffusers import AutoencoderKL

        vae_path = Path(mcfg.vae)
        model.vae = (
            AutoencoderKL.from_single_file(str(vae_path))
            if vae_path.suffix.lower() in SINGLE_FILE_SUFFIXES
            else AutoencoderKL.from_pretrained(mcfg.vae)
        )
        model.key += f"+vae:{mcfg.vae}"
    if mcfg.v_parameterization:
        # SD2.x-v: sample with the objective we train, whatever scheduler config came with the checkpoint
        model.sample_scheduler = type(model.sample_scheduler).from_config(
            model.sample_scheduler.config, prediction_type="v_prediction"
        )
        model.v_prediction = True
    return model


def _load_diffusers(mcfg: ModelConfig, base: str) -> Model:
    """A local diffusers folder, or a hub id (downloaded here: the instance has internet)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    encoders = [CLIPTextModel.from_pretrained(base, subfolder="text_encoder")]
    tokenizers = [CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")]
    if mcfg.family == "sdxl":
        encoders.append(CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2"))
        tokenizers.append(CLIPTokenizer.from_pretrained(base, subfolder="tokenizer_2"))
    scheduler = EulerDiscreteScheduler.from_pretrained(base, subfolder="scheduler")
    v_pred = mcfg.v_parameterization or scheduler.config.get("prediction_type") == "v_prediction"
    return Model(mcfg.family, unet, vae, encoders, tokenizers, scheduler, v_pred, key=f"diffusers:{base}")


def _load_single_file(mcfg: ModelConfig, path: Path, asset_cache: Path | None) -> Model:
    """A1111-style checkpoint (v1-5-pruned.safetensors, sd_xl_base_1.0.safetensors) with the shipped configs and
    tokenizers, so nothing is fetched from the hub (`from_single_file(..., config=<local folder>)`)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from lorarun.image.engine.assets import pipeline_config_dir

    if not path.is_file():
        raise FileNotFoundError(f"model.base: checkpoint {path} not found")
    config_dir = pipeline_config_dir(mcfg.family, v2=mcfg.v2, v_pred=mcfg.v_parameterization, cache_dir=asset_cache)
    cls = StableDiffusionXLPipeline if mcfg.family == "sdxl" else StableDiffusionPipeline
    kwargs = {} if mcfg.family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_single_file(str(path), config=str(config_dir), local_files_only=True, **kwargs)
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if mcfg.family == "sdxl" else [])
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if mcfg.family == "sdxl" else [])
    stat = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return Model(
        mcfg.family,
        pipe.unet,
        pipe.vae,
        encoders,
        tokenizers,
        pipe.scheduler,
        bool(mcfg.v_parameterization),
        key=f"file:{digest}",
    )
