"""The trainer's preparation before the first step: the memory check, the `started` event, and the latent and
text-embedding caches (the part of a step that never changes, computed once; engine.md §2). A mixin of `Trainer`
(`trainer.py`): it reads the fields `Trainer.__init__` sets; Flux's trainer overrides the cache hooks."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import torch

from lorarun.image.engine import data
from lorarun.image.engine.events import PhaseProgress
from lorarun.image.engine.memory_check import estimated_gb, memory_warning
from lorarun.image.hold_points import hold


class TrainerCaching:
    def _memory_check(self) -> None:
        """Say before training (and before paying for the model download) if the run will not fit; the run still
        starts — the estimate is an estimate — and a real OOM ends it with a `failed` event saying the same."""
        if self.device.type != "cuda":
            return
        available = self.cfg.max_vram_gb or torch.cuda.get_device_properties(self.device).total_memory / 2**30
        tip = memory_warning(self.cfg, available)
        if tip:
            self.events.emit(
                "warning", message=tip, estimated_gb=estimated_gb(self.cfg), available_gb=round(available, 1)
            )

    def _emit_started(self) -> None:
        cfg = self.cfg
        self.session_id = uuid.uuid4().hex
        self.started_at = time.time()
        self.events.emit(
            "started",
            job_id=cfg.job_id,
            family=cfg.model.family,
            base=cfg.model.base,
            device=str(self.device),
            num_processes=self.world,
            mixed_precision=self.mixed,
            optimizer=self.optimizer_name,
            requested_optimizer=cfg.training.optimizer_type,
            total_steps=self.total_steps,
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            num_train_images=self.scan.num_train_images,
            num_reg_images=self.scan.num_reg_images,
            train_text_encoder=self.trains_te,
            cache_text_encoder_outputs=self.cache_text,
            resume_from_step=self.resume_from_step,
            fast_step=self.fast_decision.reason,
        )

    def _cache(self) -> None:
        cfg, model = self.cfg, self.model
        cache_root = self.work_dir / "cache"
        if not cfg.training.cache_latents:
            self.events.emit("warning", message="latents are always cached (no random crop / colour augmentation)")
        self.latents = self._cache_latents(cache_root)
        self.text_cache: dict[str, data.TextEmbeds] = {}
        if self.cache_text:
            captions = [item.caption for item in self.items]

            def cache_text(write: bool) -> dict[str, data.TextEmbeds]:
                if write:
                    for encoder in model.text_encoders:
                        encoder.to(self.device, self.weight_dtype)
                    self.events.emit("caching", what="text_embeddings", count=len(set(captions)))
                text = data.cache_text(
                    captions,
                    self.family,
                    model.tokenizers,
                    model.text_encoders,
                    cfg.model.clip_skip,
                    model.key,
                    cache_root / "text",
                    self.device if write else "cpu",
                    write=write,
                    progress=PhaseProgress(self.events, "caching_text", unit="captions") if write else None,
                )
                if write:
                    for encoder in model.text_encoders:
                        encoder.to("cpu")  # not needed on the GPU until sampling
                return text

            self.text_cache = self._main_rank_first(cache_text)
        else:
            reason = (
                "the text encoder trains"
                if self.trains_te
                else "shuffle_caption / caption (tag) dropout change the caption every step"
                if cfg.training.cache_text_encoder_outputs
                else "cache_text_encoder_outputs is off"
            )
            self.events.emit("caching", what="text_embeddings", count=0, skipped=f"encoded every step: {reason}")
        self._keep_caches_on_device()

    def _main_rank_first(self, make):
        """`make(write=True)` on the main rank, which computes and writes the cache files; the other ranks wait,
        then `make(write=False)` reads the same files."""
        made = make(True) if self.accel.is_main_process else None
        self.accel.wait_for_everyone()
        return made if self.accel.is_main_process else make(False)

    def _cache_latents(self, cache_root: Path) -> dict[int, data.LatentEntry]:
        """Every image through the VAE once (flip-aware), the VAE on the GPU only for that."""
        model, flip = self.model, self.cfg.dataset.flip_aug
        vae_dtype = torch.float32 if self.weight_dtype == torch.float16 else self.weight_dtype  # fp16 VAE → NaNs

        def cache(write: bool) -> dict[int, data.LatentEntry]:
            if write:
                hold("engine:caching")  # tests only (image/hold_points.py)
                model.vae.to(self.device, vae_dtype)
                self.events.emit("caching", what="latents", count=len(self.items), flip=flip)
            latents = data.cache_latents(
                self.items,
                model.vae,
                model.key,
                cache_root / "latents",
                flip=flip,
                device=self.device if write else "cpu",
                dtype=vae_dtype if write else torch.float32,
                write=write,
                progress=PhaseProgress(self.events, "caching_latents", unit="images") if write else None,
            )
            if write:
                model.vae.to("cpu")
            return latents

        return self._main_rank_first(cache)

    def _keep_caches_on_device(self, limit_gib: float = 2.0) -> None:
        """On a GPU, hold the cached latents and embeddings there (a few hundred MB for 1000 SDXL images): a batch
        is then a stack on the device, not a host-to-device copy per step."""
        if self.device.type != "cuda":
            return
        tensors = [t for e in self.latents.values() for t in (e.latents, e.flipped) if t is not None]
        tensors += [t for e in self.text_cache.values() for t in (e.hidden, e.pooled) if t is not None]
        if sum(t.numel() * 2 for t in tensors) / 2**30 > limit_gib:
            return
        self._latents_to_device()
        for entry in self.text_cache.values():
            entry.hidden = entry.hidden.to(self.device, self.weight_dtype)
            entry.pooled = entry.pooled.to(self.device, self.weight_dtype) if entry.pooled is not None else None

    def _latents_to_device(self) -> None:
        for entry in self.latents.values():
            entry.latents = entry.latents.to(self.device)
            entry.flipped = entry.flipped.to(self.device) if entry.flipped is not None else None
