"""One training run's `Trainer`: set-up from the config, the training loop and the step's math (`loss`), resume and
stop checks. Preparation (caches, memory check) is `trainer_caching.py`, outputs (checkpoints, samples, grid) are
`trainer_outputs.py`; the entry point that builds a trainer and maps failures to exit codes is `train.py`.

Speed choices (engine.md §2, baselines.md): latents and (when possible) text embeddings cached, so a step runs only
the UNet; frozen base in bf16/fp16 with fp32 LoRA weights under autocast; SDPA attention (diffusers' default
processor); fused AdamW on CUDA; noise and timesteps drawn on the device; the loss is summed on the device and read
back only when a step event is due (no per-step host sync). `Trainer.loss` is the whole step's math, kept small so
torch.compile can wrap it later.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import ExitStack
from pathlib import Path

import torch

from lorarun.image.engine import data, kohya_extras, state
from lorarun.image.engine.events import EventLog
from lorarun.image.engine.lora import (
    add_dropout_hooks,
    add_text_encoder_lora,
    add_unet_lora,
    apply_max_norm_regularization,
    load_lora_state_dict,
)
from lorarun.image.engine.optim import build_optimizer, build_scheduler, warmup_steps
from lorarun.image.engine.save import RunFacts
from lorarun.image.engine.step import NoiseSchedule, diffusion_loss
from lorarun.image.engine.step_losses import StepLosses
from lorarun.image.engine.stop import STOP_CHECK_EVERY, LossNotFinite, StopFlag, Stopped
from lorarun.image.engine.trainer_caching import TrainerCaching
from lorarun.image.engine.trainer_outputs import TrainerOutputs
from lorarun.image.engine_config import EngineConfig
from lorarun.image.step_pacing import StepPacer


class Trainer(TrainerCaching, TrainerOutputs):
    def __init__(
        self,
        cfg: EngineConfig,
        accel,
        events: EventLog,
        stop: StopFlag,
        scan,
        optimizer_name: str,
        mixed: str,
        step_event_interval_s: float,
    ):
        self.cfg, self.accel, self.events, self.stop = cfg, accel, events, stop
        self.scan, self.optimizer_name, self.mixed = scan, optimizer_name, mixed
        self.interval = step_event_interval_s
        self.device = accel.device
        self.rank, self.world = accel.process_index, accel.num_processes
        self.weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed, torch.float32)
        t = cfg.training
        self.work_dir = Path(cfg.work_dir or Path(cfg.output_dir) / ".work")
        self.output_dir = Path(cfg.output_dir)
        self.trains_te = t.trains_text_encoder
        d = cfg.dataset
        self.items = data.items_from_scan(
            scan, Path(d.train_data_dir), Path(d.reg_data_dir) if d.reg_data_dir else None
        )
        self.samples = data.epoch_samples(scan, self.items)
        batches = data.epoch_batches(self.samples, self.items, t.batch_size, t.seed, 0)
        self.batches_per_epoch = len(data.shard_batches(batches, self.rank, self.world))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / t.gradient_accumulation_steps)
        if t.max_train_epochs is not None:
            self.epochs, self.total_steps = t.max_train_epochs, self.steps_per_epoch * t.max_train_epochs
        else:
            self.total_steps = t.max_train_steps
            self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.warmup = warmup_steps(t.lr_warmup_steps, self.total_steps)
        self.cache_text = t.cache_text_encoder_outputs and not self.trains_te and not d.caption_varies
        self.global_step = 0
        self.position = (0, 0)  # (epoch, batch) being trained, for messages
        from lorarun.image.engine.fast.trainer_glue import decide_for  # the fast step (fast/): same math, fewer kernels

        self.fast_decision = decide_for(
            cfg, cuda=self.device.type == "cuda", world=self.world, mixed=mixed, optimizer_name=optimizer_name
        )
        self.fast = None
        self.last_saved_step = 0

    # --- setup ----------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """The run's skeleton, shared by every family (Flux overrides the steps marked as hooks, not this)."""
        self._memory_check()
        found = state.find_latest(self.work_dir / "state")
        self.resume_from_step = found[1].global_step if found else None
        self._emit_started()
        self._announce()
        torch.manual_seed(self.cfg.training.seed)
        self.model = self._load_model()
        self.family = self.model.family
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

    def _announce(self) -> None:
        """Hook: the family's own facts and warnings, right after `started` (SD has none beyond `started`)."""

    def _load_model(self):
        """Hook: the model parts; a hub id is downloaded with progress events."""
        from lorarun.image.engine.models import load_model

        if _is_hub_id(self.cfg.model.base):
            from lorarun.image.engine.download_watch import DownloadWatch

            with DownloadWatch(self.events, self.cfg.model.base):
                return load_model(self.cfg.model)
        return load_model(self.cfg.model)

    def _setup_training(self) -> None:
        cfg, t, model, accel = self.cfg, self.cfg.training, self.model, self.accel
        unet = model.unet
        unet.to(dtype=self.weight_dtype)
        groups = [
            {
                "params": add_unet_lora(unet, t.network_dim, t.network_alpha, t.conv_dim, t.conv_alpha),
                "lr": t.unet_lr if t.unet_lr is not None else t.learning_rate,
            }
        ]
        add_dropout_hooks(unet, kohya_extras.lora_dropout(t))
        unet.to(self.device)
        self.channels_last = t.channels_last and self.device.type == "cuda"
        if self.channels_last:
            unet.to(memory_format=torch.channels_last)
        if t.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        self.text_encoders = list(model.text_encoders)
        if not self.cache_text:
            te_lr = t.text_encoder_lr if t.text_encoder_lr is not None else t.learning_rate
            for encoder in self.text_encoders:
                encoder.to(self.device, self.weight_dtype)
                if self.trains_te:
                    groups.append(
                        {"params": add_text_encoder_lora(encoder, t.network_dim, t.network_alpha), "lr": te_lr}
                    )
                    add_dropout_hooks(encoder, kohya_extras.lora_dropout(t))
                    encoder.to(self.device)
                    if t.gradient_checkpointing:
                        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                    encoder.train()
                else:
                    encoder.requires_grad_(False)
        cuda = self.device.type == "cuda"
        if self.fast_decision.options is not None:  # one process: nothing for accelerate to prepare
            from lorarun.image.engine.fast.trainer_glue import prepare_for_trainer

            self.fast = prepare_for_trainer(self, unet, groups)
            self.unet, self.optimizer, self.params = self.fast.unet, self.fast.optimizer, self.fast.clip_params
            optimizer = self.optimizer
        else:
            optimizer = build_optimizer(self.optimizer_name, groups, groups[0]["lr"], t.optimizer_args, cuda)
            self.params = [p for g in groups for p in g["params"]]
        self.scheduler = self._scheduler(optimizer)
        if warning := kohya_extras.optimizer_warning(self.optimizer_name, groups):
            self.events.emit("warning", message=warning)
        if self.fast is None and self.trains_te:
            prepared = accel.prepare(unet, *self.text_encoders, optimizer)
            self.unet, self.text_encoders, self.optimizer = prepared[0], list(prepared[1:-1]), prepared[-1]
        elif self.fast is None:
            self.unet, self.optimizer = accel.prepare(unet, optimizer)
        self.generator = torch.Generator(self.device).manual_seed(t.seed * 1000 + self.rank)
        self.schedule = NoiseSchedule.kohya(self.device, t.zero_terminal_snr)
        self.loss_options = kohya_extras.loss_options(t)
        self.facts = self._run_facts(
            family=self.family, v2=cfg.model.v2, v_parameterization=self.model.v_prediction, base_model=cfg.model.base
        )

    def _scheduler(self, optimizer):
        t = self.cfg.training
        return build_scheduler(
            optimizer,
            t.lr_scheduler,
            self.total_steps,
            self.warmup,
            t.lr_scheduler_num_cycles,
            t.lr_scheduler_power,
            args=t.lr_scheduler_args,
            min_lr_ratio=t.lr_scheduler_min_lr_ratio,
        )

    def _run_facts(self, **model_facts) -> RunFacts:
        """What the saved file's metadata says about this run; `model_facts`: family, v2, v_parameterization and
        base_model, which each family knows for itself."""
        return RunFacts(
            session_id=self.session_id,
            started_at=self.started_at,
            resolution=tuple(self.cfg.dataset.resolution),
            num_train_images=self.scan.num_train_images,
            num_reg_images=self.scan.num_reg_images,
            num_batches_per_epoch=self.batches_per_epoch,
            num_epochs=self.epochs,
            max_train_steps=self.total_steps,
            warmup_steps=self.warmup,
            optimizer=self.optimizer_name,
            mixed_precision=self.mixed,
            num_processes=self.world,
            **model_facts,
            **data.describe(self.scan),
        )

    def _resume(self) -> state.Progress | None:
        found = state.find_latest(self.work_dir / "state")
        if found is None:
            return None
        folder, progress = found
        if progress.fingerprint != state.fingerprint(self.cfg, self.world):
            self.events.emit("warning", message="resume state was made with a different config; starting fresh")
            return None
        lora = state.load(folder, self.rank, self.optimizer, self.scheduler, self.generator)
        for component, module in self._lora_modules():
            prefix = component + "."
            load_lora_state_dict(module, {k[len(prefix) :]: v for k, v in lora.items() if k.startswith(prefix)})
        self.global_step = self.last_saved_step = progress.global_step
        return progress

    # --- the loop -------------------------------------------------------------------------------------------------

    def _loop(self, resumed: state.Progress | None) -> None:
        t, d = self.cfg.training, self.cfg.dataset
        accum = t.gradient_accumulation_steps
        start_epoch, start_batch = (resumed.epoch, resumed.batch_in_epoch) if resumed else (0, 0)
        caption_opts = data.caption_options(d)
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0
        self.step_losses = StepLosses(self.device)  # every step's loss for the report's chart
        self.last_report = time.monotonic()
        self.last_report_step = self.global_step
        self.position = (start_epoch, start_batch)
        first_report = True
        pacer = StepPacer.from_env()  # tests only (image/step_pacing.py): a simulated GPU's step time
        if pacer:
            pacer.begin()
        for epoch in range(start_epoch, self.epochs):
            if self.global_step >= self.total_steps:
                break
            batches = data.shard_batches(
                data.epoch_batches(self.samples, self.items, t.batch_size, t.seed, epoch), self.rank, self.world
            )
            epoch_loss = torch.zeros((), device=self.device)
            epoch_count = 0
            for b in range(start_batch if epoch == start_epoch else 0, len(batches)):
                self.position = (epoch, b)
                rng = random.Random(f"{t.seed}:{epoch}:{b}:{self.rank}")
                batch = data.make_batch(
                    batches[b],
                    self.items,
                    self.latents,
                    rng,
                    flip_aug=d.flip_aug,
                    prior_loss_weight=d.prior_loss_weight,
                    caption_opts=caption_opts,
                    sdxl=self.family == "sdxl",
                )
                boundary = (b + 1) % accum == 0 or b == len(batches) - 1
                with ExitStack() as sync:
                    if not boundary and self.world > 1:  # accumulate locally; all-reduce once per optimizer step
                        for module in [self.unet] + (self.text_encoders if self.trains_te else []):
                            sync.enter_context(self.accel.no_sync(module))
                    loss = self.loss(batch)
                    self.accel.backward(loss / accum)
                detached = loss.detach()
                self.loss_sum += detached
                self.step_losses.add(detached)
                epoch_loss += detached
                self.loss_count += 1
                epoch_count += 1
                if not boundary:
                    continue
                if t.max_grad_norm > 0:
                    self.accel.clip_grad_norm_(self.params, t.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                if t.scale_weight_norms:  # kohya: after the optimizer step, on the LoRA weights
                    apply_max_norm_regularization([m for _, m in self._lora_modules()], t.scale_weight_norms)
                self.global_step += 1
                if pacer:
                    pacer.step_done()
                self.step_losses.end_step()
                done = self.global_step >= self.total_steps
                if first_report or done or time.monotonic() - self.last_report >= self.interval:
                    self._report_step(epoch)
                    first_report = False
                epoch_save = (
                    b == len(batches) - 1 and bool(t.save_every_n_epochs) and (epoch + 1) % t.save_every_n_epochs == 0
                )
                if kohya_extras.step_save_due(t, self.global_step, done=done, epoch_save_follows=epoch_save):
                    self._save_checkpoint(self._step_path(self.global_step), epoch + 1, (epoch, b + 1))
                # Data-parallel ranks must agree on the stop step, which costs an all-reduce and a host sync:
                # done every STOP_CHECK_EVERY steps there (a few seconds), every step for a single process.
                if (self.world == 1 or self.global_step % STOP_CHECK_EVERY == 0) and self._stop_requested():
                    self._save_on_stop(epoch, b + 1)
                if done:
                    break
            mean_loss = float(epoch_loss / max(epoch_count, 1))
            self._check_finite(mean_loss, epoch)  # before any checkpoint of this epoch is written
            self.events.emit(
                "epoch", epoch=epoch + 1, epochs=self.epochs, step=self.global_step, loss=round(mean_loss, 6)
            )
            finished_epoch = epoch + 1
            if self.global_step >= self.total_steps:
                break
            if self._stop_requested():  # every rank is here together: a cheap place to agree on a stop
                self._save_on_stop(epoch, len(batches))
            if t.save_every_n_epochs and finished_epoch % t.save_every_n_epochs == 0:
                self._save_checkpoint(self._epoch_path(finished_epoch), finished_epoch, (finished_epoch, 0))
                kohya_extras.remove_old_checkpoint(self.events, self._epoch_path, finished_epoch, t)
            every = self.cfg.sample.every_n_epochs
            if every and finished_epoch % every == 0 and self.cfg.sample.prompts:
                self._samples(f"e{finished_epoch:06d}")
        self.final_epoch = min(self.epochs, max(self.position[0] + 1, 1))
        if pacer:
            self.events.emit("step_pacing", **pacer.summary())

    def loss(self, batch: data.Batch) -> torch.Tensor:
        """One micro-batch: conditioning (cached, or encoded now), then the shared step math."""
        with self.accel.autocast():
            hidden, added = self._conditioning(batch)
        return diffusion_loss(
            self.unet,
            batch.latents.to(self.device, non_blocking=True),
            hidden,
            added,
            batch.loss_weight.to(self.device, non_blocking=True),
            self.schedule,
            self.generator,
            v_prediction=self.model.v_prediction,
            weight_dtype=self.weight_dtype,
            autocast=None if self.fast else self.accel.autocast(),
            channels_last=self.channels_last,
            options=self.loss_options,
        )

    def _conditioning(self, batch: data.Batch):
        device = self.device
        if self.cache_text:
            embeds = [self.text_cache[c] for c in batch.captions]
            hidden = torch.cat([e.hidden for e in embeds]).to(device, non_blocking=True)
            pooled = torch.cat([e.pooled for e in embeds]).to(device) if self.family == "sdxl" else None
        else:
            ids = data.tokenize(self.model.tokenizers, batch.captions)
            grad = torch.enable_grad() if self.trains_te else torch.no_grad()
            with grad:
                emb = data.encode_text(self.family, self.text_encoders, ids, self.cfg.model.clip_skip, device)
            hidden, pooled = emb.hidden, emb.pooled
        if self.family != "sdxl":
            return hidden, None
        return hidden, {
            "text_embeds": pooled.to(self.weight_dtype),
            "time_ids": batch.time_ids.to(device, self.weight_dtype),
        }

    def _check_finite(self, loss: float, epoch: int) -> None:
        if not math.isfinite(loss):
            raise LossNotFinite(
                f"the loss became {loss} by step {self.global_step} (epoch {epoch + 1}): training "
                f"diverged, so it stopped; lower the learning rate or network_alpha, or use bf16"
            )

    def _report_step(self, epoch: int) -> None:
        now = time.monotonic()
        loss = float(self.loss_sum / max(self.loss_count, 1))  # the one host sync, once per report
        self._check_finite(loss, epoch)
        steps = self.global_step - self.last_report_step
        it_s = steps / (now - self.last_report) if now > self.last_report else 0.0
        self.events.emit(
            "step",
            step=self.global_step,
            total_steps=self.total_steps,
            epoch=epoch + 1,
            loss=round(loss, 6),
            lr=self.scheduler.get_last_lr()[0],
            it_s=round(it_s, 3),
            losses=self.step_losses.drain(),  # each step since the last report, for the chart
        )
        self.loss_sum.zero_()
        self.loss_count = 0
        self.last_report, self.last_report_step = now, self.global_step

    def _stop_if_requested(self) -> None:
        """Between the long phases before training (download, caching): nothing to save yet, just stop."""
        if self._stop_requested():
            self.events.emit(
                "stopped",
                step=self.global_step,
                total_steps=self.total_steps,
                reason="stop signal received before training",
            )
            raise Stopped()

    def _stop_requested(self) -> bool:
        requested = self.stop.requested
        if self.world > 1:  # all ranks must stop at the same step, or the others hang in the next all-reduce
            flag = torch.tensor([1.0 if requested else 0.0], device=self.device)
            requested = bool(self.accel.reduce(flag, reduction="sum").item() > 0)
        return requested

    def describe_position(self) -> str:
        epoch, b = self.position
        bs = self.cfg.training.batch_size
        return f" at step {self.global_step + 1} (epoch {epoch + 1}, batch size {bs})"


def _is_hub_id(base: str) -> bool:
    """`org/name` that is not a path on this machine: the model comes from the hub (and may be downloaded)."""
    return base.count("/") == 1 and not base.startswith((".", "/", "~")) and ":" not in base and not Path(base).exists()
