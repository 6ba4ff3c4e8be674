"""Loading Flux.1's parts: transformer, CLIP-L, T5-XXL, the 16-channel autoencoder, both tokenizers, the sampler.

Where the parts come from (first match wins):
- `builtin:tiny-flux` → the tiny test model (`tiny.py`);
- a diffusers folder or hub id in `model.base` → every part from its subfolders;
- a single-file `model.base` (BFL's `flux1-dev.safetensors` is the transformer alone) → the transformer from that
  file, the other parts from `flux.clip_l` / `flux.t5xxl` / `flux.ae` files or the flavour's hub repository;
  single files are built from the configs we ship (`image/assets/configs/flux-{dev,schnell}/`, FLUX.1's published
  configs; parameter counts checked in the tests), so a job made of single files does not need the gated FLUX.1
  repository: the CLIP tokenizer comes from the shipped BPE, the T5 one from `google/t5-v1_1-xxl` (not gated;
  FLUX.1's tokenizer_2 is that vocabulary);
- `flux.transformer` (a fine-tune shipped as a transformer only, e.g. Dev2Pro) replaces the transformer either way.

Quantised bases (`flux.quantization` int8 / nf4) load the transformer, and T5 for caching, through bitsandbytes
(diffusers' and transformers' `BitsAndBytesConfig`): weights are quantised as they move to the GPU, so it needs
CUDA. The LoRA layers peft puts on top stay in full precision.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from lorarun.image.engine_config import ModelConfig
from lorarun.image.flux_config import FLAVOUR_REPOS, FluxConfig
from lorarun.image.schema import ConfigError

SINGLE_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt")
T5_TOKENIZER_REPO = "google/t5-v1_1-xxl"


def config_dir(flavour: str) -> Path:
    """The shipped diffusers configs of a flavour (krea is dev's architecture)."""
    from lorarun.image.engine.tokenizer import ASSETS

    return ASSETS / "configs" / ("flux-schnell" if flavour == "schnell" else "flux-dev")


@dataclass
class FluxModel:
    family: str
    transformer: object
    vae: object
    text_encoders: list  # [CLIP-L, T5-XXL]
    tokenizers: list  # [CLIP tokenizer, T5 tokenizer]
    sample_scheduler: object
    key: str  # identifies the weights; part of every cache key
    v_prediction: bool = False
    # prompt → cached FluxText: set by the trainer once the sampling prompts are encoded; sampling then needs no
    # text encoder (they are released after caching)
    prompt_embeds: dict | None = None

    @property
    def unet(self):  # the trainer's name for the denoiser
        return self.transformer

    @property
    def guidance_embeds(self) -> bool:
        return bool(getattr(self.transformer.config, "guidance_embeds", False))

    def pipeline(self):
        """A FluxPipeline sharing these modules (no copies), for sampling; with `prompt_embeds` set, one that takes
        its prompts' embeddings from them instead of the text encoders."""
        from diffusers import FluxPipeline

        if self.prompt_embeds is not None:
            pipe = FluxPipeline(
                scheduler=self.sample_scheduler,
                vae=self.vae,
                text_encoder=None,
                tokenizer=None,
                text_encoder_2=None,
                tokenizer_2=None,
                transformer=self.transformer,
            )
            return CachedPromptPipeline(pipe, self.prompt_embeds)
        return FluxPipeline(
            scheduler=self.sample_scheduler,
            vae=self.vae,
            text_encoder=self.text_encoders[0],
            tokenizer=self.tokenizers[0],
            text_encoder_2=self.text_encoders[1],
            tokenizer_2=self.tokenizers[1],
            transformer=self.transformer,
        )


class CachedPromptPipeline:
    """`pipe(prompt=…)` as `engine/sample.py` calls it, answered from cached CLIP pooled + T5 embeddings."""

    def __init__(self, pipe, embeds: dict):
        self.pipe, self.embeds = pipe, embeds

    def set_progress_bar_config(self, **kwargs) -> None:
        self.pipe.set_progress_bar_config(**kwargs)

    def __call__(self, prompt: str, negative_prompt=None, **kwargs):
        emb = self.embeds[prompt]
        device = self.pipe._execution_device
        return self.pipe(prompt_embeds=emb.t5.to(device), pooled_prompt_embeds=emb.pooled.to(device), **kwargs)


def is_single_file(ref: str | None) -> bool:
    return bool(ref) and Path(ref).suffix.lower() in SINGLE_FILE_SUFFIXES


def check_quantization(fcfg: FluxConfig, cuda: bool) -> None:
    """Before anything is downloaded: int8/nf4 need bitsandbytes on a CUDA GPU."""
    if fcfg.quantization == "bf16":
        return
    if not cuda:
        raise ConfigError(
            f"flux.quantization: {fcfg.quantization} quantises the base with bitsandbytes, which needs "
            "a CUDA GPU; use quantization: bf16 on this machine"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"flux.quantization: {fcfg.quantization} needs the bitsandbytes package in the engine image"
        ) from None


def _diffusers_quant(fcfg: FluxConfig):
    import torch
    from diffusers import BitsAndBytesConfig

    if fcfg.quantization == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    if fcfg.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def _transformers_quant(fcfg: FluxConfig):
    import torch
    from transformers import BitsAndBytesConfig

    if fcfg.quantization == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    if fcfg.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_flux(mcfg: ModelConfig, fcfg: FluxConfig) -> FluxModel:
    base = mcfg.base
    if base.startswith("builtin:"):
        from lorarun.image.engine.flux.tiny import build_tiny_flux

        parts = build_tiny_flux(fcfg.flavour)
        return FluxModel(
            "flux",
            parts.transformer,
            parts.vae,
            parts.text_encoders,
            parts.tokenizers,
            parts.scheduler,
            key=f"{base}:{fcfg.flavour}@1",
        )
    single = is_single_file(base)
    source = FLAVOUR_REPOS[fcfg.flavour] if single else base  # where parts not given as files come from
    configs = str(config_dir(fcfg.flavour)) if single else source  # the configs single files are built with
    transformer_ref = fcfg.transformer or (base if single else None)
    transformer = _load_transformer(source, configs, transformer_ref, fcfg)
    vae = _load_ae(source, configs, fcfg.ae)
    clip = _load_text_encoder(source, configs, "text_encoder", fcfg.clip_l, "clip", None)
    t5 = _load_text_encoder(source, configs, "text_encoder_2", fcfg.t5xxl, "t5", _transformers_quant(fcfg))
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import CLIPTokenizer, T5TokenizerFast

    if single:
        from lorarun.image.engine.tokenizer import load_tokenizer

        tokenizers = [
            load_tokenizer("clip_l"),
            T5TokenizerFast.from_pretrained(T5_TOKENIZER_REPO, model_max_length=512),
        ]
    else:
        tokenizers = [
            CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"),
            T5TokenizerFast.from_pretrained(source, subfolder="tokenizer_2"),
        ]
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(configs, subfolder="scheduler")
    key = "|".join(_ref_key(r) for r in (source, transformer_ref, fcfg.clip_l, fcfg.t5xxl, fcfg.ae))
    return FluxModel(
        "flux",
        transformer,
        vae,
        [clip, t5],
        tokenizers,
        scheduler,
        key=f"flux:{fcfg.quantization}:{hashlib.sha1(key.encode()).hexdigest()[:16]}",
    )


def _ref_key(ref: str | None) -> str:
    if not ref:
        return "-"
    path = Path(ref)
    if path.is_file():
        stat = path.stat()
        return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return ref


def _load_transformer(source: str, configs: str, ref: str | None, fcfg: FluxConfig):
    import torch
    from diffusers import FluxTransformer2DModel

    quant = _diffusers_quant(fcfg)
    kwargs = {"torch_dtype": torch.bfloat16, **({"quantization_config": quant} if quant else {})}
    if ref is None:
        return FluxTransformer2DModel.from_pretrained(source, subfolder="transformer", **kwargs)
    if is_single_file(ref):
        if not Path(ref).is_file():
            raise FileNotFoundError(f"flux.transformer: {ref} not found")
        # BFL/ComfyUI key layout, converted by diffusers; built with the shipped (or the folder's) config
        return FluxTransformer2DModel.from_single_file(ref, config=configs, subfolder="transformer", **kwargs)
    return FluxTransformer2DModel.from_pretrained(ref, subfolder="transformer", **kwargs)


def _load_ae(source: str, configs: str, ref: str | None):
    import torch
    from diffusers import AutoencoderKL

    if ref is None:
        return AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=torch.bfloat16)
    if not Path(ref).is_file():
        raise FileNotFoundError(f"flux.ae: {ref} not found")
    return AutoencoderKL.from_single_file(ref, config=configs, subfolder="vae", torch_dtype=torch.bfloat16)


def _load_text_encoder(source: str, configs: str, subfolder: str, ref: str | None, kind: str, quant):
    """CLIP-L / T5-XXL from the source repository, or from a ComfyUI-style single file (clip_l.safetensors,
    t5xxl_fp16.safetensors) put into a model built from the repository's config."""
    import torch
    from transformers import AutoConfig, CLIPTextModel, T5EncoderModel

    cls = CLIPTextModel if kind == "clip" else T5EncoderModel
    kwargs = {"torch_dtype": torch.bfloat16, **({"quantization_config": quant} if quant else {})}
    if ref is None:
        return cls.from_pretrained(source, subfolder=subfolder, **kwargs)
    if not Path(ref).is_file():
        raise FileNotFoundError(f"flux.{'clip_l' if kind == 'clip' else 't5xxl'}: {ref} not found")
    from safetensors.torch import load_file

    config = AutoConfig.from_pretrained(configs, subfolder=subfolder)
    with torch.device("meta"):  # only for the expected names
        wanted = set(cls(config).state_dict())
    state = {_text_key(k, wanted): v for k, v in load_file(ref).items()}
    missing = wanted - set(state) - {"encoder.embed_tokens.weight"}  # T5 ties embed_tokens to shared
    if missing:
        raise ConfigError(
            f"{ref}: not a {kind.upper()} text encoder for Flux ({len(missing)} weights missing, "
            f"e.g. {sorted(missing)[0]})"
        )
    # from_pretrained with a state dict: buffers, weight tying and bitsandbytes quantisation as for a folder
    return cls.from_pretrained(
        None, config=config, state_dict={k: v for k, v in state.items() if k in wanted}, **kwargs
    )


def _text_key(key: str, wanted: set[str]) -> str:
    """ComfyUI's clip_l.safetensors keeps transformers' old `text_model.` level, which transformers ≥ 5 dropped."""
    if key not in wanted and key.startswith("text_model.") and key[len("text_model.") :] in wanted:
        return key[len("text_model.") :]
    return key
