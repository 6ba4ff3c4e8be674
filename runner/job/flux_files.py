"""Flux jobs' extra model files: checked at `validate` (free, before renting) and uploaded beside the dataset.

A Flux job may name, besides `model.base`, a fine-tuned transformer (`flux.transformer`, e.g. Dev2Pro) and the
single files kohya users keep (`flux.clip_l`, `flux.t5xxl`, `flux.ae`). Local ones are read here by their headers
(`image/checkpoint_probe.py`: no torch, no full load) so a wrong file — an SDXL model as the transformer, a
schnell transformer under `flavour: dev`, a missing T5 — is one line at `validate`, not a failure after boot.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lorarun.image.checkpoint_probe import NotACheckpoint, probe_checkpoint
from lorarun.runner.job.spec import JobSpec

FILE_FIELDS = ("transformer", "clip_l", "t5xxl", "ae")
SUFFIXES = (".safetensors", ".sft", ".ckpt")


def _is_local(ref: str | None) -> bool:
    return ref is not None and (ref.startswith((".", "/", "~")) or ref.lower().endswith(SUFFIXES))


def local_files(spec: JobSpec) -> dict[str, Path]:
    """flux field → local path, for the fields that name a file or folder on this machine."""
    if spec.model.family != "flux":
        return {}
    return {name: spec.resolve(getattr(spec.flux, name)) for name in FILE_FIELDS if _is_local(getattr(spec.flux, name))}


def flux_problems(spec: JobSpec, cuda: bool | None) -> list[str]:
    """One line per problem with a Flux job's files and machine; [] for other families."""
    if spec.model.family != "flux":
        return []
    f, src = spec.flux, spec.source
    problems: list[str] = []
    if f.quantization != "bf16" and cuda is False:
        problems.append(
            f"{src}: flux.quantization: {f.quantization} needs a CUDA GPU (bitsandbytes) but this job "
            f"runs without one; use quantization: bf16, or choose a GPU provider"
        )
    for name, path in local_files(spec).items():
        if not path.exists():
            problems.append(f"{src}: flux.{name}: {path} does not exist")
            continue
        if name != "transformer" or path.is_dir():
            continue
        problems += _transformer_problems(spec, f"flux.{name}", path)
    base = spec.model.base
    if _is_local(base) and spec.resolve(base).is_file():
        problems += _transformer_problems(spec, "model.base", spec.resolve(base), family_checked=True)
    return problems


def _transformer_problems(spec: JobSpec, field: str, path: Path, family_checked: bool = False) -> list[str]:
    src, flavour = spec.source, spec.flux.flavour
    try:
        info = probe_checkpoint(path)
    except NotACheckpoint as exc:
        return [] if family_checked else [f"{src}: {field}: {exc}"]  # model.base: reported by check_base_model
    if info.family != "flux":
        return (
            [] if family_checked else [f"{src}: {field}: {path.name} is a {info.describe()}, not a Flux.1 transformer"]
        )
    if info.guidance_embed is False and flavour != "schnell":
        return [
            f"{src}: {field}: {path.name} has no guidance input (a schnell model) but flux.flavour is "
            f"{flavour}; set flux.flavour: schnell"
        ]
    if info.guidance_embed and flavour == "schnell":
        return [
            f"{src}: {field}: {path.name} is guidance-distilled (dev/krea) but flux.flavour is schnell; set "
            f"flux.flavour: dev (or krea)"
        ]
    return []


def upload(spec: JobSpec, engine_cfg, transport, layout, announce=print):
    """Put the job's local Flux files on the instance under <job>/model/ and point the engine config at them."""
    files = local_files(spec)
    if not files:
        return engine_cfg
    changes = {}
    for name, path in files.items():
        remote = layout.path("model", path.name)
        if path.is_dir():
            transport.put_tree(path, remote)
        else:
            announce(f"uploading {path.name} ({path.stat().st_size / 1e9:.1f} GB)")
            transport.put_file(path, remote)
        changes[name] = remote
    return dataclasses.replace(engine_cfg, flux=dataclasses.replace(engine_cfg.flux, **changes))
