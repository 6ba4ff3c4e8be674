"""Checks that need more than the config alone (the dataset, the machine) — run before any model is loaded, so a
bad job fails in seconds with one line, not after the download."""

from __future__ import annotations

from pathlib import Path

from lorarun.image.buckets import BucketSpec
from lorarun.image.dataset_scan import DatasetScan, scan_dataset
from lorarun.image.engine.optim import resolve_optimizer
from lorarun.image.schema import ConfigError


def scan(cfg) -> DatasetScan:
    d = cfg.dataset
    spec = BucketSpec(
        resolution=tuple(d.resolution),
        enable_bucket=d.enable_bucket,
        min_size=d.min_bucket_reso,
        max_size=d.max_bucket_reso,
        steps=d.bucket_reso_steps,
        no_upscale=d.bucket_no_upscale,
    )
    result = scan_dataset(
        Path(d.train_data_dir),
        spec,
        reg_root=Path(d.reg_data_dir) if d.reg_data_dir else None,
        caption_extension=d.caption_extension,
    )
    if result.errors:
        more = f" (and {len(result.errors) - 1} more problem(s))" if len(result.errors) > 1 else ""
        raise ConfigError(f"dataset: {result.errors[0]}{more}")
    return result


def preflight(cfg, data: DatasetScan, cuda: bool) -> str:
    """Raise ConfigError for a job that cannot run here; return the optimizer that will run."""
    if cfg.model.family == "flux":
        from lorarun.image.engine.flux.models import check_quantization

        check_quantization(cfg.flux, cuda)
    if cfg.model.base.startswith("builtin:") and cfg.model.base != f"builtin:tiny-{cfg.model.family}":
        raise ConfigError(
            f"model.base: {cfg.model.base} is not a {cfg.model.family} model; use "
            f"builtin:tiny-{cfg.model.family} or change model.family"
        )
    if cfg.device == "cuda" and not cuda:
        raise ConfigError("device: cuda requested but no CUDA GPU is visible")
    if cfg.training.batch_size > data.num_train_images:
        raise ConfigError(
            f"training.batch_size: {cfg.training.batch_size} is larger than the dataset "
            f"({data.num_train_images} images x repeats); lower batch_size"
        )
    if cfg.sample.width and cfg.sample.width % 8 or cfg.sample.height and cfg.sample.height % 8:
        raise ConfigError("sample.width/height: must be multiples of 8")
    return resolve_optimizer(cfg.training.optimizer_type, cuda)
