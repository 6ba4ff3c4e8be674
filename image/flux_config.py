"""Flux.1 training options (the job file's `flux:` section, the engine config's `flux` field). Torch-free.

Names follow kohya's sd-scripts `flux_train_network.py` where it has one (`guidance_scale`, `timestep_sampling`,
`discrete_flow_shift`, `sigmoid_scale`, `model_prediction_type`, `t5xxl_max_token_length`, `apply_t5_attn_mask`,
`clip_l`, `t5xxl`, `ae`), so a kohya Flux TOML maps onto it key for key (`runner/job/kohya_toml.py`).

Defaults are the ones the kohya README recommends for Flux.1-dev LoRAs (`--timestep_sampling shift
--discrete_flow_shift 3.1582 --model_prediction_type raw --guidance_scale 1.0`); schnell is a timestep-distilled
model that BFL samples without a schedule shift, so its default sampling is the unshifted sigmoid (x-flux) with
4-step, guidance-free samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from lorarun.image.schema import ConfigError

FLAVOURS = ("dev", "schnell", "krea")
# The hub repositories the parts come from when a job names only a flavour or a single-file transformer.
FLAVOUR_REPOS = {
    "dev": "black-forest-labs/FLUX.1-dev",
    "schnell": "black-forest-labs/FLUX.1-schnell",
    "krea": "black-forest-labs/FLUX.1-Krea-dev",
}
QUANTIZATIONS = ("bf16", "int8", "nf4")
TIMESTEP_SAMPLING = ("shift", "sigmoid", "uniform", "flux_shift", "sigma")
NETWORK_TARGETS = ("all", "attention", "mlp", "tiny")
MODEL_PREDICTION_TYPES = ("raw",)


@dataclass(frozen=True)
class FluxConfig:
    flavour: str = "dev"  # dev | schnell | krea (FLUX.1-Krea-dev)
    # A fine-tuned transformer shipped alone (e.g. Dev2Pro): a .safetensors file, a diffusers folder or hub id.
    # The text encoders and the autoencoder still come from model.base (or the single files below).
    transformer: str | None = None
    clip_l: str | None = None  # single-file CLIP-L (kohya --clip_l); None = from model.base / the flavour's repo
    t5xxl: str | None = None  # single-file T5-XXL encoder (kohya --t5xxl)
    ae: str | None = None  # single-file autoencoder (kohya --ae)
    quantization: str = "bf16"  # base weights: bf16 | int8 | nf4 (bitsandbytes, CUDA only); LoRA stays unquantised
    # The distilled guidance fed to the transformer while training. 1.0 trains a LoRA used with normal guidance;
    # higher values train a "CFG LoRA" (kohya's guidance_scale). Ignored by schnell, which has no guidance input.
    guidance_scale: float = 1.0
    timestep_sampling: str | None = None  # None = shift (dev/krea), sigmoid (schnell)
    discrete_flow_shift: float = 3.1582  # used by `shift` and `sigma`
    sigmoid_scale: float = 1.0
    model_prediction_type: str = "raw"
    t5xxl_max_token_length: int | None = None  # None = 512 (dev/krea), 256 (schnell), as BFL and kohya use
    apply_t5_attn_mask: bool = False
    network_target: str = "all"  # all | attention | mlp | tiny
    save_diffusers_format: bool = False  # also write <name>.diffusers.safetensors (PEFT `transformer.` keys)
    sample_guidance_scale: float | None = None  # None = 3.5 (dev/krea), 0 (schnell); sample.guidance_scale is SD's

    @property
    def sampling(self) -> str:
        return self.timestep_sampling or ("sigmoid" if self.flavour == "schnell" else "shift")

    @property
    def t5_tokens(self) -> int:
        return self.t5xxl_max_token_length or (256 if self.flavour == "schnell" else 512)

    @property
    def sample_guidance(self) -> float:
        if self.sample_guidance_scale is not None:
            return self.sample_guidance_scale
        return 0.0 if self.flavour == "schnell" else 3.5

    @property
    def trains_cfg_lora(self) -> bool:
        return self.flavour != "schnell" and self.guidance_scale > 1.0

    def validate(self, where: str = "flux") -> None:
        if self.flavour not in FLAVOURS:
            raise ConfigError(f"{where}.flavour: unknown flavour {self.flavour!r}; use one of {', '.join(FLAVOURS)}")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"{where}.quantization: use one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}")
        if self.timestep_sampling is not None and self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ConfigError(
                f"{where}.timestep_sampling: use one of {', '.join(TIMESTEP_SAMPLING)}, got {self.timestep_sampling!r}"
            )
        if self.model_prediction_type not in MODEL_PREDICTION_TYPES:
            raise ConfigError(
                f"{where}.model_prediction_type: {self.model_prediction_type!r} is not supported; "
                "lorarun trains the raw flow prediction (kohya's recommended 'raw') — remove the key "
                "or set it to raw"
            )
        if self.network_target not in NETWORK_TARGETS:
            raise ConfigError(
                f"{where}.network_target: use one of {', '.join(NETWORK_TARGETS)}, got {self.network_target!r}"
            )
        # numbers: ranges and finiteness are checked with every other field's (image/ranges.py, "flux.*")
