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

from lorarun.image.engine import data, state
from lorarun.image.engine.flux import text as flux_text
from lorarun.image.engine.flux.lora import add_flux_lora, diffusers_flux_state_dict, kohya_flux_state_dict, out_features
from lorarun.image.engine.flux.models import load_flux
from lorarun.image.engine.flux.step import flow_loss
from lorarun.image.engine.lora import unwrap
from lorarun.image.engine.optim import build_optimizer, build_scheduler
from lorarun.image.engine.save import SAVE_DTYPES, RunFacts, build_metadata, write_lora
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

    def run(self) -> None:
        cfg, t, f = self.cfg, self.cfg.training, self.fcfg
        self._memory_check()
        found = state.find_latest(self.work_dir / "state")
        self.resume_from_step = found[1].global_step if found else None
        self._emit_started()
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
        torch.manual_seed(t.seed)
        self.model = load_flux(cfg.model, f)
        self.family = "flux"
        self._stop_if_requested()
        self._cache()
        self._stop_if_requested()
        self._setup_training()
        resumed = self._resume()
        if resumed is not None and resumed.global_step >= self.total_steps and self._final_path().exists():
            self.events.emit("finished", path=self._rel(self._final_path()), step=self.global_step, resumed=True)
            return
        self._loop(resumed)
        self._finish()

    # --- caching --------------------------------------------------------------------------------------------------

    def _cache(self) -> None:
        cfg, accel, model = self.cfg, self.accel, self.model
        cache_root = self.work_dir / "cache"
        write = accel.is_main_process
        captions = [item.caption for item in self.items]
        # the sampling prompts too: samples then need no text encoder after caching
        prompts = list(cfg.sample.prompts) or [self.items[0].caption]
        captions_and_prompts = captions + prompts
        if write:
            for encoder in model.text_encoders:
                _to(encoder, self.device, self.weight_dtype)
            self.events.emit("caching", what="text_embeddings", count=len(set(captions)))
            text = flux_text.cache_text(
                captions_and_prompts,
                model.tokenizers,
                model.text_encoders,
                self.fcfg.t5_tokens,
                model.key,
                cache_root / "text",
                self.device,
            )
            for encoder in model.text_encoders:
                _to(encoder, "cpu")  # T5-XXL is 9 GB: off the GPU before the transformer arrives
            vae_dtype = torch.float32 if self.weight_dtype == torch.float16 else self.weight_dtype
            model.vae.to(self.device, vae_dtype)
            self.events.emit("caching", what="latents", count=len(self.items), flip=cfg.dataset.flip_aug)
            latents = data.cache_latents(
                self.items,
                model.vae,
                model.key,
                cache_root / "latents",
                flip=cfg.dataset.flip_aug,
                device=self.device,
                dtype=vae_dtype,
            )
            model.vae.to("cpu")
        accel.wait_for_everyone()
        if not write:
            text = flux_text.cache_text(
                captions_and_prompts,
                model.tokenizers,
                model.text_encoders,
                self.fcfg.t5_tokens,
                model.key,
                cache_root / "text",
                "cpu",
                write=False,
            )
            latents = data.cache_latents(
                self.items,
                model.vae,
                model.key,
                cache_root / "latents",
                flip=cfg.dataset.flip_aug,
                device="cpu",
                dtype=torch.float32,
                write=False,
            )
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
        if self.device.type == "cuda":
            for entry in self.latents.values():
                entry.latents = entry.latents.to(self.device)
                entry.flipped = entry.flipped.to(self.device) if entry.flipped is not None else None

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
        self.scheduler = build_scheduler(
            optimizer,
            t.lr_scheduler,
            self.total_steps,
            self.warmup,
            t.lr_scheduler_num_cycles,
            t.lr_scheduler_power,
            args=t.lr_scheduler_args,
            min_lr_ratio=t.lr_scheduler_min_lr_ratio,
        )
        self.params = params
        self.unet, self.optimizer = accel.prepare(transformer, optimizer)
        self.widths = out_features(unwrap(self.unet))
        self.generator = torch.Generator(self.device).manual_seed(t.seed * 1000 + self.rank)
        self.guidance = f.guidance_scale if self.model.guidance_embeds else None
        self.facts = RunFacts(
            session_id=self.session_id,
            started_at=self.started_at,
            family="flux",
            v2=False,
            v_parameterization=False,
            base_model=f.transformer or cfg.model.base,
            resolution=tuple(cfg.dataset.resolution),
            num_train_images=self.scan.num_train_images,
            num_reg_images=self.scan.num_reg_images,
            num_batches_per_epoch=self.batches_per_epoch,
            num_epochs=self.epochs,
            max_train_steps=self.total_steps,
            warmup_steps=self.warmup,
            optimizer=self.optimizer_name,
            mixed_precision=self.mixed,
            num_processes=self.world,
            **data.describe(self.scan),
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

    def _save_checkpoint(self, path, epoch: int, resume_at: tuple[int, int], kind: str = "checkpoint") -> None:
        t = self.cfg.training
        if self.accel.is_main_process:
            peft_sd = self._peft_state()
            dtype = SAVE_DTYPES[t.save_precision]
            metadata = flux_metadata(
                build_metadata(self.cfg, self.facts, steps=self.global_step, epoch=epoch, finished_at=time.time()),
                self.cfg,
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
        state_root = self.work_dir / "state"
        state.stage_rank(state_root, self.global_step, self.rank, self.generator)
        self.accel.wait_for_everyone()
        if self.accel.is_main_process:
            progress = state.Progress(
                self.global_step, resume_at[0], resume_at[1], state.fingerprint(self.cfg, self.world)
            )
            lora = {f"transformer.{k}": v for k, v in self._peft_state().items()}
            state.finalise(state_root, progress, lora, self.optimizer, self.scheduler)
        self.accel.wait_for_everyone()
        self.last_saved_step = self.global_step

    def _sampling_mode(self):
        """The autoencoder onto the GPU for sampling and back after (no text encoder: prompts are cached)."""
        trainer = self

        class _Mode:
            def __enter__(self):
                vae_dtype = torch.float32 if trainer.weight_dtype == torch.float16 else trainer.weight_dtype
                trainer.model.vae.to(trainer.device, vae_dtype)
                unwrap(trainer.unet).eval()

            def __exit__(self, *exc):
                unwrap(trainer.unet).train()
                trainer.model.vae.to("cpu")
                return False

        return _Mode()

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
