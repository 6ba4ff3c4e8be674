"""The Flux trainer: the SD trainer's loop, resume, stop handling, events and outputs, with Flux's parts.

What differs from SD (and is overridden here): the model (`models.load_flux`), latents (16 channels, the
autoencoder's shift_factor subtracted before scaling), text conditioning (always cached; CLIP-L pooled + T5),
the step (`step.flow_loss`), LoRA targets (`flux.network_target`), and the saved file (BFL/kohya names,
`networks.lora_flux` metadata, optionally the diffusers layout beside it).
Order of memory use, so a quantised run fits a small card: text encoders on the GPU alone to cache, then the
autoencoder alone, both back to the CPU, and only then the transformer.
"""

from __future__ import annotations

import dataclasses
import json
import time

import torch

from lorarun.image.engine import data
from lorarun.image.engine.events import PhaseProgress
from lorarun.image.engine.flux import text as flux_text
from lorarun.image.engine.flux.lora import add_flux_lora, diffusers_flux_state_dict, kohya_flux_state_dict, out_features
from lorarun.image.engine.flux.models import load_flux
from lorarun.image.engine.flux.step import flow_loss
from lorarun.image.engine.lora import unwrap
from lorarun.image.engine.optim import build_optimizer
from lorarun.image.engine.save import SAVE_DTYPES, build_metadata, write_lora
from lorarun.image.engine.trainer import Trainer

MODELSPEC = {"dev": "flux-1-dev", "schnell": "flux-1-schnell", "krea": "flux-1-dev"}


class FluxTrainer(Trainer):
    def __init__(self, cfg, *args, **kwargs):
        fcfg = cfg.flux
        # Samples use Flux's distilled guidance (3.5 dev/krea, none for schnell), not SD's CFG scale.
        cfg = dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, guidance_scale=fcfg.sample_guidance))
        super().__init__(cfg, *args, **kwargs)
        self.fcfg = fcfg
        self.trains_te = False  # Flux: LoRA on the transformer only (kohya's and ai-toolkit's default for Flux)
        self.cache_text = True

    # --- the hooks of Trainer.run ---------------------------------------------------------------------------------

    def _announce(self) -> None:
        f = self.fcfg
        self.events.emit(
            "flux",
            flavour=f.flavour,
            text_encoders="frozen (outputs cached)",
            quantization=f.quantization,
            network_target=f.network_target,
            timestep_sampling=f.sampling,
            discrete_flow_shift=f.discrete_flow_shift,
            guidance_scale=f.guidance_scale,
            t5_tokens=f.t5_tokens,
            t5_attention_mask=f.apply_t5_attn_mask,
        )
        if f.trains_cfg_lora:
            self.events.emit(
                "warning",
                message=f"flux.guidance_scale {f.guidance_scale:g} > 1: this trains a CFG "
                "LoRA (use it with that guidance); 1.0 trains a LoRA for normal guidance",
            )
        if f.flavour == "schnell" and f.guidance_scale != 1.0:
            self.events.emit("warning", message="flux.guidance_scale is ignored: schnell has no guidance input")

    def _load_model(self):
        return load_flux(self.cfg.model, self.fcfg)

    def _cache(self) -> None:
        """Text first (the encoders alone on the GPU), then the latents (the autoencoder alone): a quantised run
        then fits a small card. The sampling prompts are cached too, so samples need no text encoder later."""
        model = self.model
        cache_root = self.work_dir / "cache"
        captions = [item.caption for item in self.items]
        prompts = list(self.cfg.sample.prompts) or [self.items[0].caption]

        def cache_text(write: bool) -> dict[str, flux_text.FluxText]:
            if write:
                for encoder in model.text_encoders:
                    _to(encoder, self.device, self.weight_dtype)
                self.events.emit("caching", what="text_embeddings", count=len(set(captions)))
            text = flux_text.cache_text(
                captions + prompts,
                model.tokenizers,
                model.text_encoders,
                self.fcfg.t5_tokens,
                model.key,
                cache_root / "text",
                self.device if write else "cpu",
                write=write,
                progress=PhaseProgress(self.events, "caching_text", unit="captions") if write else None,  # T5 is slow
            )
            if write:
                for encoder in model.text_encoders:
                    _to(encoder, "cpu")  # T5-XXL is 9 GB: off the GPU before the transformer arrives
            return text

        text = self._main_rank_first(cache_text)
        latents = self._cache_latents(cache_root)
        # data.cache_latents stores z·scale; Flux trains on (z - shift)·scale (FluxPipeline's decode inverts it)
        offset = float(getattr(model.vae.config, "shift_factor", 0.0) or 0.0) * float(model.vae.config.scaling_factor)
        for entry in latents.values():
            entry.latents = entry.latents - offset
            entry.flipped = entry.flipped - offset if entry.flipped is not None else None
        self.latents, self.text_cache = latents, text
        # Text encoders are not needed again (no TE training; samples use the cached prompts): release them, which
        # also frees a bitsandbytes-quantised T5 that cannot leave the GPU.
        model.prompt_embeds = text
        model.text_encoders = []
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            self._latents_to_device()  # Flux's text stays on the CPU: T5's states are large; a batch copies its own

    # --- training -------------------------------------------------------------------------------------------------

    def _setup_training(self) -> None:
        cfg, t, f, accel = self.cfg, self.cfg.training, self.fcfg, self.accel
        transformer = self.model.transformer
        quantised = f.quantization != "bf16"
        if not quantised:
            transformer.to(dtype=self.weight_dtype)
        params = add_flux_lora(transformer, t.network_dim, t.network_alpha, f.network_target)
        lr = t.unet_lr if t.unet_lr is not None else t.learning_rate
        groups = [{"params": params, "lr": lr}]
        _to(transformer, self.device)
        if t.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        self.text_encoders = []
        self.channels_last = False
        optimizer = build_optimizer(self.optimizer_name, groups, lr, t.optimizer_args, self.device.type == "cuda")
        self.scheduler = self._scheduler(optimizer)
        self.params = params
        self.unet, self.optimizer = accel.prepare(transformer, optimizer)
        self.widths = out_features(unwrap(self.unet))
        self.generator = torch.Generator(self.device).manual_seed(t.seed * 1000 + self.rank)
        self.guidance = f.guidance_scale if self.model.guidance_embeds else None
        self.facts = self._run_facts(
            family="flux", v2=False, v_parameterization=False, base_model=f.transformer or cfg.model.base
        )

    def loss(self, batch: data.Batch) -> torch.Tensor:
        f, device = self.fcfg, self.device
        embeds = [self.text_cache[c] for c in batch.captions]
        t5 = torch.cat([e.t5 for e in embeds]).to(device, non_blocking=True)
        pooled = torch.cat([e.pooled for e in embeds]).to(device, non_blocking=True)
        mask = torch.cat([e.mask for e in embeds]).to(device) if f.apply_t5_attn_mask else None
        return flow_loss(
            self.unet,
            batch.latents.to(device, non_blocking=True),
            t5,
            pooled,
            mask,
            batch.loss_weight.to(device, non_blocking=True),
            self.generator,
            sampling=f.sampling,
            shift=f.discrete_flow_shift,
            sigmoid_scale=f.sigmoid_scale,
            guidance=self.guidance,
            weight_dtype=self.weight_dtype,
            autocast=self.accel.autocast(),
        )

    # --- outputs --------------------------------------------------------------------------------------------------

    def _lora_modules(self):
        return [("transformer", unwrap(self.unet))]

    def _write_lora(self, path, epoch: int, kind: str) -> None:
        """BFL/kohya names with kohya's Flux metadata; with `save_diffusers_format`, the diffusers layout beside it."""
        t = self.cfg.training
        peft_sd = self._peft_state()
        dtype = SAVE_DTYPES[t.save_precision]
        metadata = flux_metadata(
            build_metadata(self.cfg, self.facts, steps=self.global_step, epoch=epoch, finished_at=time.time()), self.cfg
        )
        write_lora(path, kohya_flux_state_dict(peft_sd, self.widths, t.network_alpha, dtype), metadata)
        self.events.output("checkpoint", path, kind=kind, step=self.global_step, epoch=epoch)
        if self.fcfg.save_diffusers_format:
            extra = path.with_name(path.stem + ".diffusers.safetensors")
            write_lora(
                extra,
                diffusers_flux_state_dict(peft_sd, t.network_dim, t.network_alpha, dtype),
                {**metadata, "format": "pt", "lorarun.format": "diffusers"},
            )
            self.events.output("checkpoint", extra, kind=f"{kind}-diffusers", step=self.global_step, epoch=epoch)

    def _peft_state(self) -> dict[str, torch.Tensor]:
        from lorarun.image.engine.lora import lora_state_dict

        return lora_state_dict(unwrap(self.unet))


def flux_metadata(md: dict[str, str], cfg) -> dict[str, str]:
    """kohya's Flux keys over the SD ones (`flux_train_network.py` / `sai_model_spec.py`)."""
    f = cfg.flux
    md = dict(md)
    md.pop("modelspec.prediction_type", None)  # kohya omits it for Flux
    md.update(
        {
            "ss_base_model_version": "flux1",
            "ss_network_module": "networks.lora_flux",
            "ss_network_args": json.dumps({"lorarun_target": f.network_target}),
            "ss_network_train_unet_only": "True",
            "ss_text_encoder_lr": "0",
            "ss_v2": "False",
            "ss_guidance_scale": str(f.guidance_scale),
            "ss_timestep_sampling": f.sampling,
            "ss_sigmoid_scale": str(f.sigmoid_scale),
            "ss_discrete_flow_shift": str(f.discrete_flow_shift),
            "ss_model_prediction_type": f.model_prediction_type,
            "ss_apply_t5_attn_mask": str(f.apply_t5_attn_mask),
            "ss_t5xxl_max_token_length": str(f.t5_tokens),
            "ss_fp8_base": "False",
            "lorarun.flux_flavour": f.flavour,
            "lorarun.flux_quantization": f.quantization,
            "modelspec.architecture": f"{MODELSPEC[f.flavour]}/lora",
            "modelspec.implementation": "https://github.com/black-forest-labs/flux",
        }
    )
    return md


def _to(module, device, dtype=None):
    """Move a module unless bitsandbytes quantised it (those live where they were loaded: on the GPU)."""
    if (
        getattr(module, "is_loaded_in_4bit", False)
        or getattr(module, "is_loaded_in_8bit", False)
        or getattr(module, "is_quantized", False)
    ):
        return module
    return module.to(device, dtype) if dtype is not None else module.to(device)
