"""The engine's entry point: `train(cfg, ...)` → exit code. Builds the accelerator, the event log and one trainer
(`trainer.py`; Flux's is `flux/trainer.py`), runs it, and turns every way a run can fail into a `failed` event and
an exit code. Nothing global.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import torch

from lorarun.image.engine import checks
from lorarun.image.engine.events import EventLog, one_line
from lorarun.image.engine.stop import LossNotFinite, StopFlag, Stopped
from lorarun.image.engine.trainer import Trainer
from lorarun.image.engine_config import EngineConfig
from lorarun.image.schema import ConfigError

OOM_ADVICE = "lower batch_size / enable gradient_checkpointing"
OOM_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError)


def train(cfg: EngineConfig, *, step_event_interval_s: float = 2.0) -> int:
    """Validate against the data and the machine, train, write outputs and events. Returns the exit code:
    0 finished or stopped, 2 config error, 1 training failure."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if not cuda and cfg.model.base.startswith("builtin:") and "OMP_NUM_THREADS" not in os.environ:
        # The tiny models' ops are microseconds long: extra threads only add sync overhead, and on a busy machine
        # OpenMP spin-waiting makes a step 10-30x slower (measured). One thread is the fast choice here.
        torch.set_num_threads(1)
    mixed, mp_warning = _mixed_precision(cfg.training.mixed_precision, cuda)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.training.trains_text_encoder)
    accel = Accelerator(mixed_precision=mixed, cpu=not cuda, kwargs_handlers=[ddp])
    events = EventLog(Path(cfg.output_dir), enabled=accel.is_main_process)
    stop = StopFlag().install()
    trainer = None
    try:
        if mp_warning:
            events.emit("warning", message=mp_warning)
        if cfg.dataset.captions != "given":  # captions made here first (image/engine/caption/); `only` ends here
            from lorarun.image.engine.caption.for_training import caption_before_training

            if caption_before_training(cfg, accel, events, stop):
                return 0
        scan = checks.scan(cfg)
        optimizer_name = checks.preflight(cfg, scan, cuda)
        trainer = _trainer_class(cfg)(cfg, accel, events, stop, scan, optimizer_name, mixed, step_event_interval_s)
        trainer.run()
        return 0
    except ConfigError as exc:
        message = one_line(str(exc))
        events.emit("failed", reason=message)
        if accel.is_main_process:
            print(f"lorarun-engine: {message}", file=sys.stderr)
        return 2
    except Stopped:
        return 0
    except LossNotFinite as exc:
        events.emit("failed", reason=str(exc))
        print(f"lorarun-engine: {exc}", file=sys.stderr)
        return 1
    except OOM_ERRORS:
        where = trainer.describe_position() if trainer else ""
        reason = f"out of GPU memory{where}; {OOM_ADVICE}"
        events.emit("failed", reason=reason)
        print(f"lorarun-engine: {reason}", file=sys.stderr)
        return 1
    except Exception as exc:
        traceback.print_exc()
        events.emit("failed", reason=one_line(f"{type(exc).__name__}: {exc}"))
        return 1
    finally:
        stop.uninstall()
        events.close()


def _trainer_class(cfg):
    """Flux has its own trainer (image/engine/flux/); it reuses this one's loop and outputs."""
    if cfg.model.family == "flux":
        from lorarun.image.engine.flux.trainer import FluxTrainer

        return FluxTrainer
    return Trainer


def _mixed_precision(requested: str, cuda: bool) -> tuple[str, str | None]:
    if requested == "no":
        return "no", None
    if not cuda:
        return "no", f"mixed_precision {requested} is not used on the CPU; training in fp32"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        return "fp16", "this GPU has no bf16; training with fp16 mixed precision"
    return requested, None
