"""Phase 1: everything that can be checked for free — spec, dataset, base model reference, credentials, budget.
No network. Raises `InvalidJob` listing every problem, each one line naming the file/field and what to do."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lorarun.image.buckets import BucketSpec
from lorarun.image.checkpoint_probe import CheckpointInfo, NotACheckpoint, probe_checkpoint
from lorarun.image.dataset_scan import DatasetScan, scan_dataset
from lorarun.image.engine_config import BUILTIN_PREFIX
from lorarun.image.ranges import RANGES, TOTAL_STEPS, out_of_range, range_problems
from lorarun.image.schema import ConfigError
from lorarun.runner.errors import BaseModelMissing, InvalidJob, SpecError, UserInputError
from lorarun.runner.job.flux_files import flux_problems
from lorarun.runner.job.hub_check import check_hub_model
from lorarun.runner.job.load import load_job
from lorarun.runner.job.prerent import machine_for, machine_problems
from lorarun.runner.job.settings_warnings import settings_warnings
from lorarun.runner.job.spec import JobSpec

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class ValidatedJob:
    spec: JobSpec
    scan: DatasetScan
    notes: tuple[str, ...] = ()  # what the checks want the user to know (e.g. a hub id that could not be checked)
    warnings: tuple[str, ...] = ()  # valid settings that will not do what they say (runner/job/settings_warnings.py)

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
    return BucketSpec(
        resolution=d.resolution,
        enable_bucket=d.enable_bucket,
        min_size=d.min_bucket_reso,
        max_size=d.max_bucket_reso,
        steps=d.bucket_reso_steps,
        no_upscale=d.bucket_no_upscale,
    )


def validate_job(
    path: Path,
    *,
    provider: str | None = None,
    out: Path | None = None,
    max_cost: float | None = None,
    check_credentials: bool = False,
) -> ValidatedJob:
    """Everything free to check, collected: raises one `InvalidJob` whose `problems` lists every line found
    (spec fields and ranges, command-line values, base model, machine, output name and folder, dataset)."""
    problems: list[str] = []
    notes: list[str] = []
    cli_max_cost = out_of_range("--max-cost", max_cost, RANGES["resources.max_cost"]) if max_cost is not None else None
    if cli_max_cost:
        problems.append(cli_max_cost)
        max_cost = None  # reported once, as the flag the user typed
    failed_sections: frozenset[str] = frozenset()
    try:
        spec = load_job(path)
        spec = spec.with_overrides(provider=provider, out=out, max_cost=max_cost, validate=False)
        spec_problems = spec.problems()
    except InvalidJob as exc:
        if exc.spec is None:  # some sections did not parse: judge the rest, then report all
            raise InvalidJob(problems + exc.problems) from None
        spec = exc.spec
        failed_sections = exc.failed_sections
        spec = spec.with_overrides(provider=provider, out=out, max_cost=max_cost, validate=False)
        spec_problems = exc.problems
    except UserInputError as exc:
        raise InvalidJob(problems + [str(exc)]) from None
    problems += spec_problems
    own_problems = spec.problems(skip=failed_sections)  # the spec's own, without keys the loader refused
    try:
        note = check_base_model(spec) if "model" not in failed_sections else ""
        if note:
            notes.append(note)
    except BaseModelMissing as exc:  # one problem among the others: the dataset, steps and price still run
        problems.append(str(exc))
        notes.append(missing_base_note(spec))
    except UserInputError as exc:
        problems.extend(getattr(exc, "problems", None) or [str(exc)])
    if not own_problems:  # the machine checks read the spec's numbers: only on sane ones
        machine = machine_for(spec.resources.provider)
        problems += machine_problems(spec, machine)
        problems += flux_problems(spec, machine.cuda)
    dir_problem = (
        output_dir_problem(spec.output_dir, "--out" if out is not None else "output.dir")
        if "output" not in failed_sections or out is not None
        else None
    )
    if dir_problem:
        problems.append(dir_problem if out is not None else f"{spec.source}: {dir_problem}")
    scan = None
    if "dataset" not in failed_sections and _dataset_section_ok(spec):
        scan = scan_dataset(
            spec.dataset_dir, bucket_spec(spec), reg_root=spec.reg_dir, caption_extension=spec.dataset.caption_extension
        )
        problems += [str(p) for p in scan.errors]
    job = None
    if scan is not None and not scan.errors and not failed_sections and not own_problems:
        job = ValidatedJob(spec, scan, tuple(notes))
        job = ValidatedJob(spec, scan, tuple(notes), tuple(settings_warnings(spec, job.total_steps)))
        step_problems = _step_problems(job)
        problems += step_problems
        job = None if step_problems else job
    if problems:
        error = InvalidJob(problems)
        error.job = job  # the parts that could be judged (dataset, steps): validate and estimate still show them
        raise error
    assert job is not None  # no problems: every check above ran
    if check_credentials:
        check_provider_credentials(spec)
        check_hub_publish(spec)
    return job


def _step_problems(job: ValidatedJob) -> list[str]:
    spec, scan = job.spec, job.scan
    if spec.training.batch_size > scan.num_train_images:
        return [
            f"{spec.source}: training.batch_size {spec.training.batch_size} is larger than the dataset "
            f"({scan.num_train_images} images × repeats); lower it"
        ]
    if not TOTAL_STEPS.contains(job.total_steps):
        return [
            f"{spec.source}: training: {job.total_steps:,} optimizer steps in all ({job.steps_per_epoch:,} per epoch "
            f"× {job.epochs:,} epochs) is more than a real job runs; use {TOTAL_STEPS.describe()} in total"
        ]
    return []


def missing_base_note(spec: JobSpec) -> str:
    """Without the checkpoint its header cannot say the family: the estimate uses what the job names or the file
    name suggests, and says which."""
    how = "as the job names it" if family_named(spec) else f"guessed from the name {Path(spec.model.base).name}"
    return f"model.base is not here yet: the estimate assumes model.family {spec.model.family} ({how})"


def family_named(spec: JobSpec) -> bool:
    """Whether the job file itself names the family (YAML model.family, kohya `sdxl` or [lorarun] model_family)."""
    from lorarun.runner.job.prerent import job_mentions

    return job_mentions(spec, {"family", "sdxl", "model_family"})


def _dataset_section_ok(spec: JobSpec) -> bool:
    """The scan builds buckets from the dataset section: only run it on sane numbers."""
    if range_problems(spec.dataset, "dataset"):
        return False
    try:
        spec.dataset.validate()
    except ConfigError:
        return False
    return True


def output_dir_problem(path: Path, field: str) -> str | None:
    """Can the outputs land in `path`? It must be a folder (or creatable as one) that we can write to. Probed by
    creating and removing a file in it (or in its nearest existing parent), since permission bits alone lie on
    read-only mounts. Nothing is left behind."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            return f"{field}: {existing} is a broken symbolic link; point the output elsewhere"
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file, not a folder"
        return f"{field}: {path} {what}; give a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".lorarun-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        where = "" if existing == path else f" (its nearest existing parent {existing})"
        return f"{field}: {path}{where} is not writable ({reason}); choose a folder you can write to"
    return None


def check_base_model(spec: JobSpec) -> str:
    """Raise SpecError when `model.base` cannot be what the job needs; return a note for the user (or "")."""
    base = spec.model.base
    if base.startswith(BUILTIN_PREFIX):
        return ""  # validated against the built-in list by the schema
    looks_like_path = base.startswith((".", "/", "~")) or base.lower().endswith(CHECKPOINT_SUFFIXES)
    if looks_like_path:
        path = spec.resolve(base)
        if not path.exists():
            raise BaseModelMissing(
                f"{spec.source}: model.base: {path} does not exist; give a diffusers folder, a "
                f".safetensors/.ckpt file, or a Hugging Face id like runwayml/stable-diffusion-v1-5"
            )
        if path.is_file() and path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise SpecError(f"{spec.source}: model.base: {path.name} is not a .safetensors or .ckpt checkpoint")
        if path.is_dir() and not (path / "model_index.json").is_file():
            raise SpecError(
                f"{spec.source}: model.base: {path} is a folder without model_index.json (not a diffusers model folder)"
            )
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
        raise SpecError(
            f"{spec.source}: model.base: {path.name} is {_article(info.describe())} but model.family is "
            f"{model.family!r}; set model.family: {info.family} or give a {model.family} checkpoint"
        )
    if info.family == "sd15" and info.sd2 is not None and info.sd2 != model.v2:
        fix = "set model.v2: true (and v_parameterization: true for a 768-v model)" if info.sd2 else "remove model.v2"
        raise SpecError(
            f"{spec.source}: model.base: {path.name} is {_article(info.describe())} but model.v2 is "
            f"{str(model.v2).lower()}; {fix}"
        )
    return info


def _article(text: str) -> str:
    return ("an " if text[:1].lower() in "aeiou" or text.startswith("SD") else "a ") + text


def check_hub_publish(spec: JobSpec) -> None:
    """`output.hub`: a missing or refused Hub token is one line now, before anything is rented (the publish itself
    comes after the job). A Hub that cannot be reached now is only a note: the publish retries at the end."""
    if not spec.output.hub:
        return
    from lorarun.runner.console import err_console
    from lorarun.runner.publish.hub import PublishFailed, check_token

    try:
        check_token(spec.output.hub)
    except PublishFailed as exc:
        err_console.print(f"[yellow]note: {exc}; publishing is tried again when the job ends[/]", highlight=False)


def check_provider_credentials(spec: JobSpec) -> None:
    """Fail before any network call when a cloud provider has no key configured."""
    if spec.resources.provider not in ("vastai", "runpod"):
        return
    try:
        from lorarun.provider_adapters.credentials import find_api_key
    except ImportError as exc:  # pragma: no cover - the credentials module ships with lorarun
        raise UserInputError(f"cannot look up credentials: {exc}") from None
    find_api_key(spec.resources.provider)
