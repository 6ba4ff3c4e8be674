"""The trainer's outputs: kohya LoRA files with their resume state, the stop checkpoint, samples and the strength
grid, and the final `finished` event. A mixin of `Trainer` (`trainer.py`): it reads the fields the trainer sets."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lorarun.image.engine import state
from lorarun.image.engine.events import PhaseProgress
from lorarun.image.engine.kohya_keys import te_prefixes
from lorarun.image.engine.lora import lora_state_dict, unwrap
from lorarun.image.engine.save import SAVE_DTYPES, build_metadata, kohya_state_dict, write_lora
from lorarun.image.engine.stop import Stopped
from lorarun.image.hold_points import hold


class TrainerOutputs:
    def _lora_modules(self) -> list[tuple[str, torch.nn.Module]]:
        modules = [("unet", unwrap(self.unet))]
        if self.trains_te:
            modules += [(prefix, unwrap(enc)) for prefix, enc in zip(te_prefixes(self.family), self.text_encoders)]
        return modules

    def _lora_state(self, module) -> dict[str, torch.Tensor]:
        """The LoRA weights to save: the fast step's fp32 masters where it keeps bf16 weights."""
        state = lora_state_dict(module)
        return self.fast.full_precision(state) if self.fast else state

    def _epoch_path(self, epoch: int) -> Path:
        return self.output_dir / f"{self.cfg.output_name}-{epoch:06d}.safetensors"

    def _step_path(self, step: int) -> Path:
        return self.output_dir / f"{self.cfg.output_name}-step{step:08d}.safetensors"  # kohya's step naming

    def _final_path(self) -> Path:
        return self.output_dir / f"{self.cfg.output_name}.safetensors"

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.output_dir).as_posix()

    def _save_checkpoint(self, path: Path, epoch: int, resume_at: tuple[int, int], kind: str = "checkpoint") -> None:
        """The LoRA file (main rank) and the resume state (all ranks: each its RNG)."""
        if self.accel.is_main_process:
            self._write_lora(path, epoch, kind)
        state_root = self.work_dir / "state"
        state.stage_rank(state_root, self.global_step, self.rank, self.generator)
        self.accel.wait_for_everyone()
        if self.accel.is_main_process:
            progress = state.Progress(
                self.global_step, resume_at[0], resume_at[1], state.fingerprint(self.cfg, self.world)
            )
            lora = {f"{c}.{k}": v for c, m in self._lora_modules() for k, v in self._lora_state(m).items()}
            state.finalise(state_root, progress, lora, self.optimizer, self.scheduler)
        self.accel.wait_for_everyone()
        self.last_saved_step = self.global_step

    def _write_lora(self, path: Path, epoch: int, kind: str) -> None:
        """Hook: the kohya file users load (main rank only), and its `checkpoint` event."""
        t = self.cfg.training
        save_started = time.monotonic()  # the report's "saving" time
        components = [(c, self._lora_state(m)) for c, m in self._lora_modules()]
        tensors = kohya_state_dict(
            components,
            self.family,
            t.network_alpha,
            SAVE_DTYPES[t.save_precision],
            self.model.layers_per_block,
            conv_alpha=(t.conv_alpha or 1.0) if t.conv_dim else None,
        )
        metadata = build_metadata(self.cfg, self.facts, steps=self.global_step, epoch=epoch, finished_at=time.time())
        write_lora(path, tensors, metadata)
        self.events.output(
            "checkpoint",
            path,
            kind=kind,
            step=self.global_step,
            epoch=epoch,
            save_seconds=round(time.monotonic() - save_started, 3),
        )

    def _save_on_stop(self, epoch: int, next_batch: int) -> None:
        if self.global_step > self.last_saved_step:
            path = self._step_path(self.global_step)
            self._save_checkpoint(path, epoch + 1, (epoch, next_batch))  # epoch+1: the one in progress, kohya-style
        self.events.emit(
            "stopped", step=self.global_step, total_steps=self.total_steps, reason="stop signal received; state saved"
        )
        raise Stopped()

    def _samples(self, label: str) -> None:
        if self.accel.is_main_process:
            from lorarun.image.engine.sample import render_samples

            prompts = list(self.cfg.sample.prompts)
            with self._sampling_mode():
                paths = render_samples(
                    self.model,
                    self.cfg,
                    prompts,
                    self.output_dir / "samples",
                    label,
                    self.device,
                    self._autocast_dtype(),
                    progress=PhaseProgress(self.events, "sampling", len(prompts), unit="images"),
                )
            for path in paths:
                self.events.output("sample", path, kind="sample", step=self.global_step)
        self.accel.wait_for_everyone()

    def _grid(self) -> None:
        if self.accel.is_main_process:
            from lorarun.image.engine.sample import render_grid

            hold("engine:grid")  # tests only (image/hold_points.py)

            prompt = self.cfg.sample.prompts[0] if self.cfg.sample.prompts else self.items[0].caption
            path = self.output_dir / f"{self.cfg.output_name}_grid.png"
            cells = len(self.cfg.sample.grid_strengths) * len(self.cfg.sample.grid_seeds)
            with self._sampling_mode():
                render_grid(
                    self.model,
                    self.cfg,
                    prompt,
                    path,
                    [m for _, m in self._lora_modules()],
                    self.device,
                    self._autocast_dtype(),
                    progress=PhaseProgress(self.events, "sampling_grid", cells, unit="images"),
                )
            self.events.output(
                "grid",
                path,
                kind="grid",
                strengths=list(self.cfg.sample.grid_strengths),
                seeds=list(self.cfg.sample.grid_seeds),
                prompt=prompt,
            )
        self.accel.wait_for_everyone()

    def _autocast_dtype(self):
        return self.weight_dtype if self.weight_dtype != torch.float32 else None

    def _sampling_mode(self):
        """Bring the VAE and text encoders to the GPU for sampling and send them back after."""
        trainer = self

        class _Mode:
            def __enter__(self):
                vae_dtype = torch.float32 if trainer.weight_dtype == torch.float16 else trainer.weight_dtype
                trainer.model.vae.to(trainer.device, vae_dtype)  # an fp16 SD VAE decodes to NaNs
                for encoder in trainer.model.text_encoders:
                    encoder.to(trainer.device)
                unwrap(trainer.unet).eval()
                for encoder in trainer.model.text_encoders:
                    encoder.eval()

            def __exit__(self, *exc):
                unwrap(trainer.unet).train()
                trainer.model.vae.to("cpu")
                for encoder in trainer.model.text_encoders:
                    if trainer.trains_te:
                        encoder.train()
                    elif trainer.cache_text:
                        encoder.to("cpu")
                return False

        return _Mode()

    def _finish(self) -> None:
        epoch = self.final_epoch
        final = self._final_path()
        self._save_checkpoint(final, epoch, (self.epochs, 0), kind="final")
        # A stop asked for now skips the pictures: the LoRA is what matters and it is saved. All ranks agree on
        # it (one all-reduce), or some would wait forever at the sampling barrier.
        stop_now = self._stop_requested()
        if self.cfg.sample.prompts and not stop_now:
            self._samples(f"e{epoch:06d}")
        if self.cfg.sample.grid_strengths and self.cfg.sample.grid_seeds and not stop_now:
            self._grid()
        if stop_now:
            self.events.emit(
                "stopped",
                step=self.global_step,
                total_steps=self.total_steps,
                path=self._rel(final),
                reason="stop signal received; final LoRA saved, samples skipped",
            )
            return
        self.events.emit(
            "finished", path=self._rel(final), step=self.global_step, total_steps=self.total_steps, epoch=epoch
        )
