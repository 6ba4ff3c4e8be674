"""The job side of an estimate: `inputs_from_job` reads the spec and the dataset scan once into `EstimateInputs`
(steps, sizes to move, memory needed, samples to render), which `estimate.py` then prices on each offer."""

from __future__ import annotations

from pathlib import Path

from lorarun.image.dataset_scan import DatasetScan
from lorarun.image.engine_config import BUILTIN_PREFIX
from lorarun.image.memory import FAMILIES as MEMORY_FAMILIES
from lorarun.image.memory import config_memory_keys, estimate_vram_gb, ram_needed_gb
from lorarun.runner.job.flux_files import local_files as flux_local_files
from lorarun.runner.job.spec import JobSpec
from lorarun.runner.price.calibration import Calibration, StepOptions
from lorarun.runner.price.calibration_load import load_calibration
from lorarun.runner.price.caption_time import with_captioning
from lorarun.runner.price.estimate import SAMPLE_PNG_BYTES_PER_PIXEL, EstimateInputs
from lorarun.runner.run import stock


def inputs_from_job(spec: JobSpec, scan: DatasetScan, calibration: Calibration | None = None) -> EstimateInputs:
    """The estimate's view of a validated job (reads file sizes of the dataset and of a local base model)."""
    cal = calibration or load_calibration()
    t, s = spec.training, spec.sample
    family, trains_te, quantization = config_memory_keys(spec)
    steps = scan.total_steps(t.batch_size, t.max_train_epochs, t.max_train_steps, t.gradient_accumulation_steps)
    epochs = scan.epochs_for(t.batch_size, t.max_train_epochs, t.max_train_steps, t.gradient_accumulation_steps)
    options = StepOptions(
        gradient_checkpointing=t.gradient_checkpointing,
        trains_text_encoder=trains_te,
        mixed_precision=t.mixed_precision,
    )
    download_gb, upload_bytes = _model_transfer(spec, cal.family(family).model_gb)
    upload_bytes += sum(_folder_bytes(p) for p in flux_local_files(spec).values())  # flux.transformer, t5xxl, …
    dataset_bytes = _folder_bytes(spec.dataset_dir) + (_folder_bytes(spec.reg_dir) if spec.reg_dir else 0)
    sample_images = _sample_images(len(s.prompts), epochs, s.every_n_epochs, len(s.grid_strengths) * len(s.grid_seeds))
    w, h = s.width or spec.dataset.resolution[0], s.height or spec.dataset.resolution[1]
    # One file per save epoch, plus the final one unless the last epoch was itself a save epoch.
    every = t.save_every_n_epochs
    saves = (epochs // every + (1 if epochs % every else 0)) if every else 1
    if t.save_every_n_steps:  # step files too (some coincide with epoch files: the count errs high)
        saves += (steps - 1) // t.save_every_n_steps
    output_bytes = saves * lora_file_bytes(family, t.network_dim, trains_te) + int(
        sample_images * w * h * SAMPLE_PNG_BYTES_PER_PIXEL
    )
    inputs = EstimateInputs(
        steps=steps,
        family=family,
        resolution=(spec.dataset.resolution[0], spec.dataset.resolution[1]),
        batch_size=t.batch_size,
        options=options,
        network_dim=t.network_dim,
        num_images=scan.num_images + scan.num_reg_images,
        dataset_bytes=dataset_bytes,
        model_download_gb=download_gb,
        model_upload_bytes=upload_bytes,
        image_gb=cal.transfer.image_gb,
        sample_images=sample_images,
        sample_steps=s.steps,
        output_bytes=output_bytes,
        vram_needed_gb=estimate_vram_gb(
            family,
            (spec.dataset.resolution[0], spec.dataset.resolution[1]),
            t.batch_size,
            t.network_dim,
            t.gradient_checkpointing,
            trains_te,
            t.mixed_precision,
            quantization,
        ),
        gpu_count=spec.resources.gpu_count,
        disk_gb=spec.resources.disk_gb,
        model_ref=spec.model.base,
        quantization=quantization,
        ram_needed_gb=ram_needed_gb(family, quantization),
        install_s=stock.INSTALL_SECONDS if stock.is_stock(spec.resources.image) else 0.0,
    )
    return with_captioning(inputs, spec, scan)


def lora_file_bytes(family: str, network_dim: int, trains_text_encoder: bool) -> int:
    """Size of one saved LoRA in fp16: two bytes per parameter."""
    mem = MEMORY_FAMILIES[family]
    per_rank = mem.lora_params_per_rank + (mem.te_lora_params_per_rank if trains_text_encoder else 0)
    return int(per_rank * network_dim * 2)


def _sample_images(prompts: int, epochs: int, every_n_epochs: int | None, grid_cells: int) -> int:
    if not prompts:
        return 0
    during = prompts * (epochs // every_n_epochs) if every_n_epochs else 0
    # At the end: one image per prompt, plus the strength × seed grid of the first prompt.
    return during + prompts + grid_cells


def _model_transfer(spec: JobSpec, hub_gb: float) -> tuple[float, int]:
    """(GB the instance downloads, bytes the laptop uploads) for the base model."""
    base = spec.model.base
    if base.startswith(BUILTIN_PREFIX):
        return 0.0, 0
    local = spec.resolve(base)
    if local.exists():
        return 0.0, _folder_bytes(local) if local.is_dir() else local.stat().st_size
    return hub_gb, 0


def _folder_bytes(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- the model --------------------------------------------------------------------------------------------------
