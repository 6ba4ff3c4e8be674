"""The engine's configuration: what the controller writes and the engine reads (`engine_config.json`).

Torch-free on purpose: the laptop validates a job with these same classes, so a config the controller accepted is
one the engine accepts. Names follow kohya's sd-scripts where kohya has a name for the thing, so a kohya user
recognises every field (and `runner/job/kohya_toml.py` maps their TOML onto these).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lorarun.image.caption_config import caption_problems
from lorarun.image.flux_config import FluxConfig
from lorarun.image.names import output_name_problem
from lorarun.image.optimizer_args import optimizer_args_problems
from lorarun.image.ranges import range_problems
from lorarun.image.schema import ConfigError, from_mapping

FAMILIES = ("sd15", "sdxl", "flux")
OPTIMIZERS = (
    "auto",
    "AdamW",
    "AdamW8bit",
    "PagedAdamW8bit",
    "Lion8bit",
    "PagedLion8bit",
    "Lion",
    "Prodigy",
    "DAdaptAdam",
    "DAdaptLion",
    "DAdaptAdaGrad",
    "DAdaptAdan",
    "DAdaptSGD",
    "Adafactor",
)
SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "cosine_with_min_lr",
)
LOSS_TYPES = ("l2", "l1", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential", "snr")
MIXED_PRECISION = ("no", "fp16", "bf16")
FAST_STEP_MODES = ("auto", "on", "off")
# The fast training step's levers (image/engine/fast/), each of which `training.fast_step_off` can turn off to
# measure it or to work around a problem. Torch-free here so the laptop validates the names.
FAST_STEP_LEVERS = ("master_weights", "fused_lora", "flat_optimizer", "compile", "cuda_graphs", "lean_checkpointing")
BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = ("builtin:tiny-sd15", "builtin:tiny-sdxl", "builtin:tiny-flux")


@dataclass(frozen=True)
class ModelConfig:
    family: str = "sd15"  # sd15 (also SD2.x with v2/v_parameterization), sdxl, flux
    base: str = "runwayml/stable-diffusion-v1-5"  # diffusers folder, hub id, .safetensors/.ckpt, builtin:tiny-*
    vae: str | None = None
    v2: bool = False
    v_parameterization: bool = False
    clip_skip: int = 1

    def validate(self, where: str = "model") -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"{where}.family: unknown family {self.family!r}; use one of {', '.join(FAMILIES)}")
        if self.base.startswith(BUILTIN_PREFIX) and self.base not in BUILTIN_MODELS:
            raise ConfigError(
                f"{where}.base: unknown built-in model {self.base!r}; use one of {', '.join(BUILTIN_MODELS)}"
            )
        if self.family == "sdxl" and (self.v2 or self.v_parameterization):
            raise ConfigError(f"{where}.v2: SD2.x flags (v2, v_parameterization) do not apply to family sdxl")
        if not 1 <= self.clip_skip <= 12:
            raise ConfigError(f"{where}.clip_skip: must be between 1 and 12, got {self.clip_skip}")


@dataclass(frozen=True)
class DatasetConfig:
    train_data_dir: str = "dataset"  # kohya layout: <repeats>_<class tokens>/image + caption
    reg_data_dir: str | None = None  # regularisation images, same layout
    resolution: tuple[int, int] = (512, 512)  # (width, height); a single number in the job file means square
    enable_bucket: bool = True
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    caption_extension: str = ".txt"
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_dropout_rate: float = 0.0
    flip_aug: bool = False
    prior_loss_weight: float = 1.0
    # kohya: tags before the separator stay first (and after a second one, last); only the rest shuffle / drop
    keep_tokens_separator: str = ""
    caption_tag_dropout_rate: float = 0.0  # kohya: drop each non-kept tag with this probability
    # given | auto | only; the model and trigger word of captions made on the instance (image/caption_config.py)
    captions: str = "given"
    caption_model: str = "florence2"
    caption_trigger: str | None = None  # prepended to each new caption; None: the folder's class tokens
    caption_overwrite: bool = False  # replace existing captions too (`lorarun caption --overwrite`)

    @property
    def caption_varies(self) -> bool:
        """Whether a caption can change between steps (then text embeddings cannot be cached)."""
        return self.shuffle_caption or self.caption_dropout_rate > 0 or self.caption_tag_dropout_rate > 0

    def validate(self, where: str = "dataset") -> None:
        w, h = self.resolution
        step = self.bucket_reso_steps
        if step <= 0 or step % 8:
            raise ConfigError(f"{where}.bucket_reso_steps: must be a positive multiple of 8, got {step}")
        if w % step or h % step:
            raise ConfigError(
                f"{where}.resolution: {w}x{h} is not a multiple of bucket_reso_steps ({step}); "
                f"use e.g. {round(w / step) * step or step}x{round(h / step) * step or step}"
            )
        if self.enable_bucket:
            if self.min_bucket_reso % step or self.max_bucket_reso % step:
                raise ConfigError(f"{where}: min_bucket_reso and max_bucket_reso must be multiples of {step}")
            if not self.min_bucket_reso <= min(w, h) <= max(w, h) <= self.max_bucket_reso:
                raise ConfigError(
                    f"{where}: resolution {w}x{h} must lie between min_bucket_reso {self.min_bucket_reso} "
                    f"and max_bucket_reso {self.max_bucket_reso}"
                )
        if self.caption_extension not in (".txt", ".caption"):
            raise ConfigError(f"{where}.caption_extension: use '.txt' or '.caption', got {self.caption_extension!r}")
        if not 0.0 <= self.caption_dropout_rate < 1.0:
            raise ConfigError(f"{where}.caption_dropout_rate: must be in [0, 1), got {self.caption_dropout_rate}")
        if self.keep_tokens < 0:
            raise ConfigError(f"{where}.keep_tokens: must be >= 0")
        if not self.caption_tag_dropout_rate < 1.0:  # the range table has [0, 1]; 1 would drop every tag
            raise ConfigError(f"{where}.caption_tag_dropout_rate: must be below 1, got {self.caption_tag_dropout_rate}")
        if problems := caption_problems(self.captions, self.caption_model, self.caption_trigger, where):
            raise ConfigError(problems[0], problems)
        if self.keep_tokens_separator.strip() in (",", "") and self.keep_tokens_separator:
            raise ConfigError(
                f"{where}.keep_tokens_separator: {self.keep_tokens_separator!r} would split every tag; "
                "use a marker such as '|||'"
            )


@dataclass(frozen=True)
class TrainingConfig:
    max_train_epochs: int | None = 10
    max_train_steps: int | None = None  # used only when max_train_epochs is None (kohya: epochs override steps)
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    unet_lr: float | None = None  # None = learning_rate
    text_encoder_lr: float | None = 5e-5  # None = learning_rate; 0 = do not train the text encoder(s)
    network_train_unet_only: bool = False
    network_dim: int = 32
    network_alpha: float = 16.0
    lr_scheduler: str = "cosine_with_restarts"
    lr_warmup_steps: float = 0  # an int is steps; a float below 1 is a ratio of the total (kohya)
    lr_scheduler_num_cycles: int = 1
    lr_scheduler_power: float = 1.0
    # "auto" = AdamW8bit on CUDA with bitsandbytes (the guides' choice), else fused AdamW, said in an event.
    # An explicit "AdamW8bit" without CUDA is an error, not a silent swap.
    optimizer_type: str = "auto"
    optimizer_args: tuple[str, ...] = ()  # kohya's "key=value" strings, e.g. "weight_decay=0.01"
    mixed_precision: str = "bf16"
    save_every_n_epochs: int | None = 2
    # A checkpoint and resume state every N optimizer steps too (kohya's name): bounds the work an interrupted
    # rental loses to N steps (runner/price/interruptible.py counts it in the expected cost).
    save_every_n_steps: int | None = None
    save_precision: str = "fp16"
    seed: int = 42
    gradient_checkpointing: bool = False
    min_snr_gamma: float | None = None
    noise_offset: float | None = None
    max_grad_norm: float = 1.0
    cache_latents: bool = True
    cache_text_encoder_outputs: bool = True  # turned off by the engine when text encoders train
    max_data_loader_n_workers: int = 2
    channels_last: bool = False  # NHWC UNet on CUDA; measure before turning on (engine.md §2.1: no clear win)
    # The fast step (image/engine/fast/): "auto" = on for one CUDA process with bf16, "on" = also on the CPU,
    # "off" = the plain diffusers+peft step. Same math either way (tests/image/engine/test_fast_step.py).
    fast_step: str = "auto"
    fast_step_off: tuple[str, ...] = ()  # levers of FAST_STEP_LEVERS to leave out
    # --- kohya options that change training (names, defaults and meaning as sd-scripts; see image/engine/step.py,
    # lora.py, optim.py for the formulas). None / False / "l2" = off, as in kohya.
    network_dropout: float | None = None  # dropout on each LoRA's down-projection output (kohya neuron dropout)
    rank_dropout: float | None = None  # network_args rank_dropout
    module_dropout: float | None = None  # network_args module_dropout
    conv_dim: int | None = None  # network_args conv_dim: LoCon, LoRA on the UNet's 3x3 convs too
    conv_alpha: float | None = None  # network_args conv_alpha (kohya: 1 when conv_dim is set without it)
    scale_weight_norms: float | None = None  # max-norm regularisation of each LoRA's weight delta
    noise_offset_random_strength: bool = False
    adaptive_noise_scale: float | None = None
    multires_noise_iterations: int | None = None  # pyramid noise levels (kohya suggests 6-10)
    multires_noise_discount: float = 0.3
    ip_noise_gamma: float | None = None  # input perturbation noise (kohya suggests 0.1)
    ip_noise_gamma_random_strength: bool = False
    zero_terminal_snr: bool = False
    loss_type: str = "l2"  # l2, l1, huber, smooth_l1
    huber_schedule: str = "snr"  # constant, exponential, snr
    huber_c: float = 0.1
    huber_scale: float = 1.0
    debiased_estimation_loss: bool = False
    save_last_n_epochs: int | None = None  # keep only the last N epoch checkpoints (the final file always stays)
    lr_scheduler_args: tuple[str, ...] = ()  # kohya's "key=value" scheduler arguments
    lr_scheduler_min_lr_ratio: float | None = None  # cosine_with_min_lr: the floor as a ratio of the base LR
    min_timestep: int | None = None  # train on timesteps [min_timestep, max_timestep) only (kohya: 0 and 1000)
    max_timestep: int | None = None
    scale_v_pred_loss_like_noise_pred: bool = False  # v-prediction models only
    v_pred_like_loss: float | None = None  # ε-prediction models only

    @property
    def trains_text_encoder(self) -> bool:
        return not self.network_train_unet_only and self.text_encoder_lr != 0

    def validate(self, where: str = "training") -> None:
        if self.max_train_epochs is None and self.max_train_steps is None:
            raise ConfigError(f"{where}: set epochs (max_train_epochs) or max_train_steps")
        for name in ("max_train_epochs", "max_train_steps", "save_every_n_epochs", "save_every_n_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{where}.{name}: must be at least 1, got {value}")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ConfigError(f"{where}: batch_size and gradient_accumulation_steps must be at least 1")
        if self.network_dim < 1:
            raise ConfigError(f"{where}.network_dim: must be at least 1, got {self.network_dim}")
        if self.network_alpha <= 0:
            raise ConfigError(f"{where}.network_alpha: must be > 0, got {self.network_alpha}")
        if self.optimizer_type not in OPTIMIZERS:
            raise ConfigError(
                f"{where}.optimizer_type: unknown optimizer {self.optimizer_type!r}; use one of {', '.join(OPTIMIZERS)}"
            )
        if self.lr_scheduler not in SCHEDULERS:
            raise ConfigError(
                f"{where}.lr_scheduler: unknown scheduler {self.lr_scheduler!r}; use one of {', '.join(SCHEDULERS)}"
            )
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"{where}.mixed_precision: use one of {', '.join(MIXED_PRECISION)}")
        if self.save_precision not in ("fp16", "bf16", "float"):
            raise ConfigError(f"{where}.save_precision: use fp16, bf16 or float")
        for lr_name in ("learning_rate", "unet_lr", "text_encoder_lr"):
            lr = getattr(self, lr_name)
            if lr is not None and (lr < 0 or lr > 1):
                raise ConfigError(f"{where}.{lr_name}: {lr} is not a plausible learning rate (0 to 1)")
        if self.lr_warmup_steps < 0:
            raise ConfigError(f"{where}.lr_warmup_steps: must be >= 0")
        arg_problems = optimizer_args_problems(self.optimizer_type, self.optimizer_args, f"{where}.optimizer_args")
        if arg_problems:
            raise ConfigError(arg_problems[0], arg_problems)
        if self.fast_step not in FAST_STEP_MODES:
            raise ConfigError(f"{where}.fast_step: use one of {', '.join(FAST_STEP_MODES)}, got {self.fast_step!r}")
        for lever in self.fast_step_off:
            if lever not in FAST_STEP_LEVERS:
                raise ConfigError(
                    f"{where}.fast_step_off: unknown lever {lever!r}; use any of {', '.join(FAST_STEP_LEVERS)}"
                )
        self._validate_kohya_options(where)

    def _validate_kohya_options(self, where: str) -> None:
        """Rules beyond the range table (image/ranges.py has each numeric field's range and refuses NaN/inf)."""
        for name in ("network_dropout", "rank_dropout", "module_dropout"):
            value = getattr(self, name)
            if value is not None and not value < 1.0:  # p = 1 drops everything (and rank_dropout divides by 1 - p)
                raise ConfigError(f"{where}.{name}: a dropout probability below 1, got {value}")
        if self.conv_alpha is not None and self.conv_dim is None:
            raise ConfigError(f"{where}.conv_alpha: set conv_dim too (conv_alpha alone does nothing in kohya)")
        if self.adaptive_noise_scale is not None and not self.noise_offset:
            raise ConfigError(f"{where}.adaptive_noise_scale: needs noise_offset (kohya adds it to the offset)")
        low = 0 if self.min_timestep is None else self.min_timestep
        high = 1000 if self.max_timestep is None else self.max_timestep
        if not low < high:
            raise ConfigError(f"{where}.min_timestep: must be below max_timestep ({low} >= {high})")
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"{where}.loss_type: use one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.huber_schedule not in HUBER_SCHEDULES:
            raise ConfigError(f"{where}.huber_schedule: use one of {', '.join(HUBER_SCHEDULES)}")
        for arg in self.lr_scheduler_args:
            if "=" not in arg:
                raise ConfigError(f"{where}.lr_scheduler_args: {arg!r} is not of the form key=value")
        if self.lr_scheduler == "cosine_with_min_lr" or self.lr_scheduler_args:
            from lorarun.image.scheduler_args import check_scheduler_args

            check_scheduler_args(self, where)


# kohya options implemented in the SD1.5/SDXL trainer only; the Flux trainer (image/engine/flux/) has its own step,
# LoRA and data path, so a Flux job with one of these set is refused instead of silently training without it.
SD_ONLY_OPTIONS = {
    "training": (
        "network_dropout",
        "rank_dropout",
        "module_dropout",
        "conv_dim",
        "conv_alpha",
        "scale_weight_norms",
        "noise_offset_random_strength",
        "adaptive_noise_scale",
        "multires_noise_iterations",
        "ip_noise_gamma",
        "ip_noise_gamma_random_strength",
        "zero_terminal_snr",
        "loss_type",
        "debiased_estimation_loss",
        "save_last_n_epochs",
        "min_timestep",
        "max_timestep",
        "scale_v_pred_loss_like_noise_pred",
        "v_pred_like_loss",
        # SD noise-schedule options with no meaning in Flux's flow matching (kohya's Flux trainer has none)
        "min_snr_gamma",
        "noise_offset",
    ),
    # Flux always caches the text embeddings of the captions as written: per-step caption changes cannot apply
    "dataset": ("keep_tokens_separator", "caption_tag_dropout_rate", "shuffle_caption", "caption_dropout_rate"),
}


def family_option_problems(model: ModelConfig, dataset: DatasetConfig, training: TrainingConfig) -> list[str]:
    """One line per kohya option set for a family whose trainer does not implement it, or for the wrong prediction
    type (kohya's `verify_training_args` refuses the same two combinations)."""
    problems = []
    if training.scale_v_pred_loss_like_noise_pred and not model.v_parameterization:
        problems.append("training.scale_v_pred_loss_like_noise_pred: needs model.v_parameterization (kohya)")
    if training.v_pred_like_loss and model.v_parameterization:
        problems.append("training.v_pred_like_loss: cannot be used with model.v_parameterization (kohya)")
    if model.family != "flux":
        return problems
    for section, obj, default in (("training", training, TrainingConfig()), ("dataset", dataset, DatasetConfig())):
        for name in SD_ONLY_OPTIONS[section]:
            if getattr(obj, name) != getattr(default, name):
                problems.append(
                    f"{section}.{name}: lorarun implements it for sd15/sdxl; the Flux trainer does not "
                    "support it yet (remove it)"
                )
    return problems


@dataclass(frozen=True)
class SampleConfig:
    prompts: tuple[str, ...] = ()
    negative_prompt: str = ""
    every_n_epochs: int | None = None  # None = only at the end
    steps: int = 20
    guidance_scale: float = 7.0
    seed: int = 1234
    width: int | None = None  # None = the training resolution
    height: int | None = None
    grid_strengths: tuple[float, ...] = (0.0, 0.5, 0.8, 1.0)
    grid_seeds: tuple[int, ...] = (1, 2)

    def validate(self, where: str = "sample") -> None:
        if self.every_n_epochs is not None and self.every_n_epochs < 1:
            raise ConfigError(f"{where}.every_n_epochs: must be at least 1")
        if self.steps < 1:
            raise ConfigError(f"{where}.steps: must be at least 1")


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs; paths are as seen by the engine (on the instance)."""

    job_id: str
    output_dir: str
    output_name: str
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    flux: FluxConfig = field(default_factory=FluxConfig)  # read only when model.family is flux
    work_dir: str = ""  # caches (latents, embeddings) and resume state; "" = <output_dir>/.work
    device: str = "auto"  # auto | cpu | cuda
    max_vram_gb: float | None = None  # for the memory check; None = what the GPU reports

    def validate(self) -> None:
        # The same range table as the laptop's `validate` (image/ranges.py): the engine trusts no number blindly.
        for section in ("model", "dataset", "training", "sample", "flux"):
            problems = range_problems(getattr(self, section), section)
            if problems:
                raise ConfigError(problems[0], problems)
        self.model.validate()
        self.dataset.validate()
        self.training.validate()
        self.sample.validate()
        self.flux.validate()
        family_problems = family_option_problems(self.model, self.dataset, self.training)
        if family_problems:
            raise ConfigError(family_problems[0], family_problems)
        name_problem = output_name_problem(self.output_name, "output_name")
        if name_problem:
            raise ConfigError(name_problem)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def write(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict, where: str = "engine_config") -> EngineConfig:
        return from_mapping(cls, data, where)

    @classmethod
    def read(cls, path: Path) -> EngineConfig:
        cfg = cls.from_dict(json.loads(path.read_text(encoding="utf-8")), where=str(path))
        cfg.validate()
        return cfg


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]
