"""The job file: YAML in lorarun's own shape, or a kohya training TOML (mapped in `kohya_toml.py`).

parse (YAML/TOML → mapping) → build (mapping → frozen `JobSpec`, precise errors) → validate (cross-field rules).
Nothing here touches the network or the dataset; `runner/job/validate.py` adds the dataset scan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorarun.image.engine_config import (
    DatasetConfig,
    EngineConfig,
    ModelConfig,
    SampleConfig,
    TrainingConfig,
    family_option_problems,
)
from lorarun.image.flux_config import FluxConfig
from lorarun.image.names import output_name_problem
from lorarun.image.ranges import range_problems
from lorarun.image.schema import ConfigError, from_mapping, unknown_key_message
from lorarun.runner.errors import InvalidJob, SpecError
from lorarun.runner.job.hosted_spec import NotifyConfig, hub_repo_problem

PROVIDERS = ("local", "ssh", "vastai", "runpod")
INTERRUPTIBLE_MODES = ("never", "allowed", "prefer")


def interruptible_mode(value: Any) -> Any:
    """`resources.interruptible` as one of INTERRUPTIBLE_MODES; booleans (the older form) read as allowed/never.
    Anything else is returned as given, for `validate()` to name."""
    if isinstance(value, bool):
        return "allowed" if value else "never"
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "false", "no"):
        return "allowed" if value.strip().lower() in ("true", "yes") else "never"
    return value.strip().lower() if isinstance(value, str) else value


DEFAULT_IMAGE = "ghcr.io/lorarun/engine:0.1.0"


@dataclass(frozen=True)
class Resources:
    # "" = not chosen: the job inherits the user's `lorarun config set provider …`, else `submit` asks (never a
    # silent default: a job that quietly ran on the laptop, or rented, surprised users both ways)
    provider: str = ""
    gpus: tuple[str, ...] = ()  # acceptable GPU names, e.g. ["RTX 4090", "RTX 3090"]; empty = any that fits
    gpu_count: int = 1
    min_vram_gb: float = 0.0
    max_price_per_hour: float | None = None
    max_cost: float | None = None  # refuse offers predicted above it; stop the job cleanly when spend reaches it
    min_reliability: float = 0.0
    min_inet_down_mbps: float = 0.0
    disk_gb: float = 40.0
    # never | allowed | prefer (true/false read as allowed/never): interruptible machines (Vast bids, RunPod spot)
    # cost about half; an interruption is resumed on a new rental (runner/run/interruption.py)
    interruptible: Any = "never"
    max_bid_per_hour: float | None = None  # interruptible: never bid above this (whole machine, dollars)
    bid_margin: float = 0.1  # interruptible: bid this share above the offer's minimum bid (outbid less often)
    max_interruptions: int = 5  # interruptible: re-rents after interruptions before the job stops
    secure_cloud_only: bool = False
    regions: tuple[str, ...] = ()
    image: str = DEFAULT_IMAGE
    # provider "ssh": a machine you own
    ssh_host: str | None = None
    ssh_port: int = 22
    ssh_user: str = "root"
    ssh_key: str | None = None
    price_per_hour: float = 0.0  # what your own machine costs you, for the estimate
    # (key, file) for each value inherited from the user's config (`lorarun config`), so a refusal that comes
    # from one says where it came from; set by `user_config.inherit`, never by a job file (build_job refuses it)
    inherited_from: tuple[tuple[str, str], ...] = ()

    def origin(self, key: str) -> str:
        """ " (gpus from ~/.config/lorarun/config.toml)" for an inherited setting, "" for the job's own."""
        where = dict(self.inherited_from).get(key)
        return f" ({key} from {where})" if where else ""

    def given(self, key: str, value: Any) -> Resources:
        """These resources with `key` set on the command line (no longer inherited from the user config)."""
        inherited = tuple((k, f) for k, f in self.inherited_from if k != key)
        return dataclasses.replace(self, **{key: value}, inherited_from=inherited)

    def __post_init__(self) -> None:
        object.__setattr__(self, "interruptible", interruptible_mode(self.interruptible))

    def validate(self, where: str = "resources") -> None:
        if self.interruptible not in INTERRUPTIBLE_MODES:
            raise ConfigError(
                f"{where}.interruptible: {self.interruptible!r} is not one of {', '.join(INTERRUPTIBLE_MODES)}"
            )
        if self.max_bid_per_hour is not None and self.max_bid_per_hour <= 0:
            raise ConfigError(f"{where}.max_bid_per_hour: must be a positive number of dollars")
        if not 0 <= self.bid_margin <= 5:
            raise ConfigError(f"{where}.bid_margin: a share of the minimum bid between 0 and 5 (0.1 = 10% above)")
        if not 0 <= self.max_interruptions <= 100:
            raise ConfigError(f"{where}.max_interruptions: between 0 and 100")
        if self.provider and self.provider not in PROVIDERS:
            raise ConfigError(
                f"{where}.provider: unknown provider {self.provider!r}; use one of {', '.join(PROVIDERS)}"
            )
        if self.gpu_count < 1:
            raise ConfigError(f"{where}.gpu_count: must be at least 1")
        for name in ("max_price_per_hour", "max_cost"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{where}.{name}: must be a positive number of dollars, got {value}")
        if self.disk_gb < 10:
            raise ConfigError(f"{where}.disk_gb: {self.disk_gb} GB is too small for a base model and outputs; use 10+")
        if not 0 <= self.min_reliability <= 1:
            raise ConfigError(f"{where}.min_reliability: must be between 0 and 1")
        if self.provider == "ssh" and not self.ssh_host:
            raise ConfigError(f"{where}.ssh_host: provider 'ssh' needs the host to run on")


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "output"  # relative paths are relative to the job file
    name: str = "lora"  # file name of the LoRA, without .safetensors
    unique: bool = False  # a fresh sub-folder <dir>/<name>-<n> per run (as `--out auto`; runner/job/output_claim.py)
    hub: str | None = None  # a Hugging Face repo id (user/repo): the verified LoRA is published there (publish.py)
    hub_private: bool = True  # a repo lorarun creates is private unless this is false


@dataclass(frozen=True)
class JobSpec:
    name: str
    source: str  # the job file, absolute
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    flux: FluxConfig = field(default_factory=FluxConfig)  # Flux.1 options; only for model.family flux
    resources: Resources = field(default_factory=Resources)
    output: OutputConfig = field(default_factory=OutputConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)  # a webhook told of each phase (runner/run/notify.py)
    notes: tuple[str, ...] = ()  # things the loader wants the user to know (kohya keys ignored, guesses made)

    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def dataset_dir(self) -> Path:
        return self.resolve(self.dataset.train_data_dir)

    @property
    def reg_dir(self) -> Path | None:
        return self.resolve(self.dataset.reg_data_dir) if self.dataset.reg_data_dir else None

    @property
    def output_dir(self) -> Path:
        return self.resolve(self.output.dir)

    def with_overrides(
        self,
        *,
        provider: str | None = None,
        out: Path | None = None,
        max_cost: float | None = None,
        validate: bool = True,
    ) -> JobSpec:
        spec = self
        if provider:
            spec = dataclasses.replace(spec, resources=spec.resources.given("provider", provider))
        if max_cost is not None:
            spec = dataclasses.replace(spec, resources=spec.resources.given("max_cost", max_cost))
        if out is not None:
            spec = dataclasses.replace(spec, output=dataclasses.replace(spec.output, dir=str(out.resolve())))
        if validate:
            spec.validate()
        return spec

    def problems(self, skip: frozenset[str] = frozenset()) -> list[str]:
        """Every problem with this spec, one line each, prefixed with the job file: ranges and finiteness from
        the one table (`image/ranges.py`), then each section's own rules, then the output name. Sections in
        `skip` are not judged (they failed to parse and hold defaults)."""
        found: list[str] = []
        for section in ("model", "dataset", "training", "sample", "flux", "resources", "notify"):
            if section in skip:
                continue
            obj = getattr(self, section)
            out_of_range = range_problems(obj, section)
            found.extend(out_of_range)
            if out_of_range:
                continue  # the section's own rules assume sane numbers (a 1e12 resolution would build 1e12 buckets)
            try:
                obj.validate()
            except ConfigError as exc:
                found.extend(exc.problems)
        flux_said = any(p.startswith("flux.") for p in found)  # one line about a flux section is enough
        if self.flux != FluxConfig() and self.model.family != "flux" and not {"model", "flux"} & skip and not flux_said:
            found.append(
                f"flux: this section applies to model.family flux only (the job's family is "
                f"{self.model.family}); remove it or set model.family: flux"
            )
        if not {"model", "dataset", "training"} & skip:
            found.extend(family_option_problems(self.model, self.dataset, self.training))
        name_problem = None if "output" in skip else output_name_problem(self.output.name)
        if name_problem:
            found.append(name_problem)
        hub_problem = None if "output" in skip else hub_repo_problem(self.output.hub)
        if hub_problem:
            found.append(hub_problem)
        return [f"{self.source}: {p}" for p in found]

    def validate(self) -> None:
        """Raises `InvalidJob` listing every problem (not just the first)."""
        problems = self.problems()
        if problems:
            raise InvalidJob(problems)

    def engine_config(
        self,
        *,
        job_id: str,
        dataset_dir: str,
        reg_dir: str | None,
        output_dir: str,
        work_dir: str = "",
        device: str = "auto",
    ) -> EngineConfig:
        """The engine's view of this job, with paths as the engine will see them."""
        dataset = dataclasses.replace(self.dataset, train_data_dir=dataset_dir, reg_data_dir=reg_dir)
        return EngineConfig(
            job_id=job_id,
            output_dir=output_dir,
            output_name=self.output.name,
            model=self.model,
            dataset=dataset,
            training=self.training,
            sample=self.sample,
            flux=self.flux,
            work_dir=work_dir,
            device=device,
        )


# Friendly names a YAML job may use for kohya's longer ones. One table, so docs and errors stay in step.
YAML_ALIASES: dict[str, dict[str, str]] = {
    "dataset": {"path": "train_data_dir", "reg_path": "reg_data_dir"},
    "training": {
        "epochs": "max_train_epochs",
        "steps": "max_train_steps",
        "optimizer": "optimizer_type",
        "scheduler": "lr_scheduler",
        "warmup_steps": "lr_warmup_steps",
    },
    "sample": {},
    "flux": {},
    "model": {},
    "resources": {},
    "output": {},
    "notify": {},
}
SECTIONS = {
    "model": ModelConfig,
    "dataset": DatasetConfig,
    "training": TrainingConfig,
    "sample": SampleConfig,
    "flux": FluxConfig,
    "resources": Resources,
    "output": OutputConfig,
    "notify": NotifyConfig,
}


def build_job(data: Any, path: Path, notes: tuple[str, ...] = ()) -> JobSpec:
    """Mapping → validated `JobSpec`. Collects every problem of every section into one `InvalidJob`."""
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}")
    known = ["name", *SECTIONS]
    values: dict[str, Any] = {}
    problems: list[str] = []
    failed: set[str] = set()
    for key, raw in data.items():
        if key == "name":
            if not isinstance(raw, str) or not raw.strip():
                problems.append(f"{path}: name: expected a non-empty text")
            else:
                values["name"] = raw.strip()
            continue
        if key not in SECTIONS:
            problems.append(f"{path}: {unknown_key_message('(top level)', str(key), known)}")
            continue
        if key == "resources" and isinstance(raw, dict) and "inherited_from" in raw:
            problems.append(f"{path}: {unknown_key_message('resources', 'inherited_from', [])}")
            raw = {k: v for k, v in raw.items() if k != "inherited_from"}
        try:
            section = _apply_aliases(key, raw, path)
            values[key] = from_mapping(SECTIONS[key], section, key)
        except SpecError as exc:
            problems.append(str(exc))
            failed.add(key)
        except ConfigError as exc:
            problems.extend(f"{path}: {p}" for p in exc.problems)
            failed.add(key)
            partial = _partial_section(SECTIONS[key], exc.partial)
            if partial is not None:
                values[key] = partial
                problems.extend(f"{path}: {p}" for p in range_problems(partial, key))
    values.setdefault("name", path.stem)
    # Sections that parsed are still judged (a failed one keeps its defaults and is skipped), so one run of
    # `validate` lists every problem in the file.
    spec = JobSpec(source=str(path.resolve()), notes=notes, **values)
    problems += spec.problems(skip=frozenset(failed))
    if problems:
        error = InvalidJob(problems)
        error.spec, error.failed_sections = spec, frozenset(failed)  # `validate_job` goes on with the rest
        raise error
    return spec


def _partial_section(cls: type, converted: dict[str, Any] | None) -> Any:
    """A section built from the keys that converted (defaults elsewhere), so their ranges can still be judged."""
    if not converted:
        return None
    try:
        return cls(**converted)
    except (TypeError, ValueError):
        return None


def _apply_aliases(section: str, raw: Any, path: Path) -> Any:
    if not isinstance(raw, dict):
        return raw
    aliases = YAML_ALIASES.get(section, {})
    out: dict[str, Any] = {}
    for key, value in raw.items():
        canonical = aliases.get(str(key), str(key))
        if canonical in out:
            raise SpecError(f"{path}: {section}.{key}: given twice (as {canonical!r} too)")
        out[canonical] = value
    return out
