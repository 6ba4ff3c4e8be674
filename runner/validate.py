"""Phase 1: everything that can be checked for free — spec, dataset, base model reference, credentials, budget.
No network. Raises a `UserInputError` subclass with one line naming the file/field and what to do."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lorarun.image.buckets import BucketSpec
from lorarun.image.checkpoint_probe import CheckpointInfo, NotACheckpoint, probe_checkpoint
from lorarun.image.dataset_scan import DatasetScan, scan_dataset
from lorarun.image.engine_config import BUILTIN_PREFIX

from .errors import InvalidJob, SpecError, UserInputError
from .hub_check import check_hub_model
from .prerent import machine_for, machine_problems
from .spec import JobSpec, load_job

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class ValidatedJob:
    spec: JobSpec
    scan: DatasetScan
    notes: tuple[str, ...] = ()  # what the checks want the user to know (e.g. a hub id that could not be checked)

    @property
    def steps_per_epoch(self) -> int:
        return self.scan.steps_per_epoch(self.spec.training.batch_size)

    @property
    def total_steps(self) -> int:
        t = self.spec.training
        return self.scan.total_steps(t.batch_size, t.max_train_epochs, t.max_train_steps, t.gradient_accumulation_steps)

    @property
    def epochs(self) -> int:
        t = self.spec.training
        return self.scan.epochs_for(t.batch_size, t.max_train_epochs, t.max_train_steps, t.gradient_accumulation_steps)


def bucket_spec(spec: JobSpec) -> BucketSpec:
    d = spec.dataset
    return BucketSpec(resolution=d.resolution, enable_bucket=d.enable_bucket, min_size=d.min_bucket_reso,
                      max_size=d.max_bucket_reso, steps=d.bucket_reso_steps, no_upscale=d.bucket_no_upscale)


def validate_job(path: Path, *, provider: str | None = None, out: Path | None = None,
                 max_cost: float | None = None, check_credentials: bool = False) -> ValidatedJob:
    spec = load_job(path).with_overrides(provider=provider, out=out, max_cost=max_cost)
    problems: list[str] = []
    notes: list[str] = []
    try:
        note = check_base_model(spec)
        if note:
            notes.append(note)
    except SpecError as exc:
        problems.append(str(exc))
    problems += machine_problems(spec, machine_for(spec.resources.provider))
    scan = scan_dataset(spec.dataset_dir, bucket_spec(spec), reg_root=spec.reg_dir,
                        caption_extension=spec.dataset.caption_extension)
    problems += [str(e) for e in scan.errors]
    if problems:
        raise InvalidJob(problems)
    job = ValidatedJob(spec, scan, tuple(notes))
    if job.spec.training.batch_size > scan.num_train_images:
        raise SpecError(
            f"{spec.source}: training.batch_size {spec.training.batch_size} is larger than the dataset "
            f"({scan.num_train_images} images × repeats); lower it"
        )
    if check_credentials:
        check_provider_credentials(spec)
    return job


def check_base_model(spec: JobSpec) -> str:
    """Raise SpecError when `model.base` cannot be what the job needs; return a note for the user (or "")."""
    base = spec.model.base
    if base.startswith(BUILTIN_PREFIX):
        return ""  # validated against the built-in list by the schema
    looks_like_path = base.startswith((".", "/", "~")) or base.lower().endswith(CHECKPOINT_SUFFIXES)
    if looks_like_path:
        path = spec.resolve(base)
        if not path.exists():
            raise SpecError(f"{spec.source}: model.base: {path} does not exist; give a diffusers folder, a "
                            f".safetensors/.ckpt file, or a Hugging Face id like runwayml/stable-diffusion-v1-5")
        if path.is_file() and path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise SpecError(f"{spec.source}: model.base: {path.name} is not a .safetensors or .ckpt checkpoint")
        if path.is_dir() and not (path / "model_index.json").is_file():
            raise SpecError(f"{spec.source}: model.base: {path} is a folder without model_index.json "
                            f"(not a diffusers model folder)")
        if path.is_file():
            check_checkpoint_file(spec, path)
        return ""
    if not _HUB_ID.match(base):
        raise SpecError(f"{spec.source}: model.base: {base!r} is neither a path nor a Hugging Face id (org/name)")
    hub = check_hub_model(base, needed_here=spec.resources.provider == "local")
    if not hub.ok:
        raise SpecError(f"{spec.source}: model.base: {hub.message}")
    return hub.message


def check_checkpoint_file(spec: JobSpec, path: Path) -> CheckpointInfo:
    """Read the checkpoint's header (no torch, no full load) and hold it against `model.family` / `model.v2`."""
    try:
        info = probe_checkpoint(path)
    except NotACheckpoint as exc:
        raise SpecError(f"{spec.source}: model.base: {exc}") from None
    model = spec.model
    if info.family != model.family:
        raise SpecError(f"{spec.source}: model.base: {path.name} is {_article(info.describe())} but model.family is "
                        f"{model.family!r}; set model.family: {info.family} or give a {model.family} checkpoint")
    if info.family == "sd15" and info.sd2 is not None and info.sd2 != model.v2:
        fix = "set model.v2: true (and v_parameterization: true for a 768-v model)" if info.sd2 else "remove model.v2"
        raise SpecError(f"{spec.source}: model.base: {path.name} is {_article(info.describe())} but model.v2 is "
                        f"{str(model.v2).lower()}; {fix}")
    return info


def _article(text: str) -> str:
    return ("an " if text[:1].lower() in "aeiou" or text.startswith("SD") else "a ") + text


def check_provider_credentials(spec: JobSpec) -> None:
    """Fail before any network call when a cloud provider has no key configured."""
    if spec.resources.provider not in ("vastai", "runpod"):
        return
    try:
        from lorarun.provider_adapters.credentials import find_api_key
    except ImportError as exc:  # pragma: no cover - the credentials module ships with lorarun
        raise UserInputError(f"cannot look up credentials: {exc}") from None
    find_api_key(spec.resources.provider)
