"""kohya sd-scripts training TOML (`--config_file`) → lorarun job.

kohya flattens every section and treats the keys as its argparse options (`library/train_util.py::
read_config_from_file`), so section names carry no meaning and we flatten too. One table maps each key kohya
users write to a place in the job; keys that only tune kohya internals we replace (attention kernel, data-loader
flags) are accepted and reported; a real kohya option lorarun does not implement is refused as exactly that
("known kohya option, not supported by lorarun yet" — the names come from kohya's argparse, `kohya_options.py`);
only a name kohya does not know gets "did you mean". An optional `[lorarun]` section carries what kohya has no key
for (provider, GPUs, budget).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from lorarun.image.schema import unknown_key_message
from lorarun.runner.errors import InvalidJob, SpecError
from lorarun.runner.job.hosted_spec import LORARUN_HOSTED_KEYS
from lorarun.runner.job.kohya_options import KOHYA_NETWORK_ARGS, KOHYA_OPTIMIZERS, KOHYA_OPTIONS, KOHYA_SCHEDULERS
from lorarun.runner.job.spec import build_job

# kohya key → (section, field). Values are converted and validated by the job schema afterwards.
KOHYA_KEYS: dict[str, tuple[str, str]] = {
    "pretrained_model_name_or_path": ("model", "base"),
    "vae": ("model", "vae"),
    "v2": ("model", "v2"),
    "v_parameterization": ("model", "v_parameterization"),
    "clip_skip": ("model", "clip_skip"),
    "train_data_dir": ("dataset", "train_data_dir"),
    "reg_data_dir": ("dataset", "reg_data_dir"),
    "resolution": ("dataset", "resolution"),
    "enable_bucket": ("dataset", "enable_bucket"),
    "min_bucket_reso": ("dataset", "min_bucket_reso"),
    "max_bucket_reso": ("dataset", "max_bucket_reso"),
    "bucket_reso_steps": ("dataset", "bucket_reso_steps"),
    "bucket_no_upscale": ("dataset", "bucket_no_upscale"),
    "caption_extension": ("dataset", "caption_extension"),
    "shuffle_caption": ("dataset", "shuffle_caption"),
    "keep_tokens": ("dataset", "keep_tokens"),
    "caption_dropout_rate": ("dataset", "caption_dropout_rate"),
    "flip_aug": ("dataset", "flip_aug"),
    "prior_loss_weight": ("dataset", "prior_loss_weight"),
    "keep_tokens_separator": ("dataset", "keep_tokens_separator"),
    "caption_tag_dropout_rate": ("dataset", "caption_tag_dropout_rate"),
    "output_dir": ("output", "dir"),
    "output_name": ("output", "name"),
    "max_train_epochs": ("training", "max_train_epochs"),
    "max_train_steps": ("training", "max_train_steps"),
    "train_batch_size": ("training", "batch_size"),
    "batch_size": ("training", "batch_size"),
    "gradient_accumulation_steps": ("training", "gradient_accumulation_steps"),
    "learning_rate": ("training", "learning_rate"),
    "unet_lr": ("training", "unet_lr"),
    "text_encoder_lr": ("training", "text_encoder_lr"),
    "network_train_unet_only": ("training", "network_train_unet_only"),
    "network_dim": ("training", "network_dim"),
    "network_alpha": ("training", "network_alpha"),
    "lr_scheduler": ("training", "lr_scheduler"),
    "lr_warmup_steps": ("training", "lr_warmup_steps"),
    "lr_scheduler_num_cycles": ("training", "lr_scheduler_num_cycles"),
    "lr_scheduler_power": ("training", "lr_scheduler_power"),
    "optimizer_type": ("training", "optimizer_type"),
    "optimizer_args": ("training", "optimizer_args"),
    "mixed_precision": ("training", "mixed_precision"),
    "save_every_n_epochs": ("training", "save_every_n_epochs"),
    "save_every_n_steps": ("training", "save_every_n_steps"),
    "save_precision": ("training", "save_precision"),
    "seed": ("training", "seed"),
    "gradient_checkpointing": ("training", "gradient_checkpointing"),
    "min_snr_gamma": ("training", "min_snr_gamma"),
    "noise_offset": ("training", "noise_offset"),
    "max_grad_norm": ("training", "max_grad_norm"),
    "cache_latents": ("training", "cache_latents"),
    "cache_latents_to_disk": ("training", "cache_latents"),
    "cache_text_encoder_outputs": ("training", "cache_text_encoder_outputs"),
    "cache_text_encoder_outputs_to_disk": ("training", "cache_text_encoder_outputs"),
    "max_data_loader_n_workers": ("training", "max_data_loader_n_workers"),
    # kohya options that change training (issue #12.3); engine: step.py, lora.py, optim.py, data.py
    "network_dropout": ("training", "network_dropout"),
    "scale_weight_norms": ("training", "scale_weight_norms"),
    "noise_offset_random_strength": ("training", "noise_offset_random_strength"),
    "adaptive_noise_scale": ("training", "adaptive_noise_scale"),
    "multires_noise_iterations": ("training", "multires_noise_iterations"),
    "multires_noise_discount": ("training", "multires_noise_discount"),
    "ip_noise_gamma": ("training", "ip_noise_gamma"),
    "ip_noise_gamma_random_strength": ("training", "ip_noise_gamma_random_strength"),
    "zero_terminal_snr": ("training", "zero_terminal_snr"),
    "loss_type": ("training", "loss_type"),
    "huber_schedule": ("training", "huber_schedule"),
    "huber_c": ("training", "huber_c"),
    "huber_scale": ("training", "huber_scale"),
    "debiased_estimation_loss": ("training", "debiased_estimation_loss"),
    "save_last_n_epochs": ("training", "save_last_n_epochs"),
    "lr_scheduler_args": ("training", "lr_scheduler_args"),
    "lr_scheduler_min_lr_ratio": ("training", "lr_scheduler_min_lr_ratio"),
    "min_timestep": ("training", "min_timestep"),
    "max_timestep": ("training", "max_timestep"),
    "scale_v_pred_loss_like_noise_pred": ("training", "scale_v_pred_loss_like_noise_pred"),
    "v_pred_like_loss": ("training", "v_pred_like_loss"),
    "sample_every_n_epochs": ("sample", "every_n_epochs"),
    # Flux (sd-scripts flux_train_network.py / library/flux_train_utils.py): image/flux_config.py
    "clip_l": ("flux", "clip_l"),
    "t5xxl": ("flux", "t5xxl"),
    "ae": ("flux", "ae"),
    "guidance_scale": ("flux", "guidance_scale"),
    "timestep_sampling": ("flux", "timestep_sampling"),
    "sigmoid_scale": ("flux", "sigmoid_scale"),
    "discrete_flow_shift": ("flux", "discrete_flow_shift"),
    "model_prediction_type": ("flux", "model_prediction_type"),
    "t5xxl_max_token_length": ("flux", "t5xxl_max_token_length"),
    "apply_t5_attn_mask": ("flux", "apply_t5_attn_mask"),
}

# Accepted and not needed: lorarun always does what these ask for, or they only affect kohya's own logging.
IGNORED_KEYS: dict[str, str] = {
    "xformers": "lorarun always uses PyTorch SDPA attention",
    "sdpa": "lorarun always uses PyTorch SDPA attention",
    "mem_eff_attn": "lorarun always uses PyTorch SDPA attention",
    "persistent_data_loader_workers": "latents are cached, so loader workers do not restart",
    "lowram": "not needed",
    "highvram": "not needed",
    "no_half_vae": "the VAE runs in fp32 while caching latents",
    "full_fp16": "LoRA weights train in fp32 under autocast",
    "full_bf16": "LoRA weights train in fp32 under autocast",
    "logging_dir": "events are written to events.jsonl",
    "log_prefix": "events are written to events.jsonl",
    "log_with": "events are written to events.jsonl",
    "sample_sampler": "samples use the base model's scheduler",
    "save_state": "lorarun always saves resumable state with each checkpoint",
    "save_model_as": "lorarun always saves .safetensors",
    "network_module": "lorarun trains kohya-format LoRA (networks.lora)",
    "training_comment": "kept in the report",
    "max_token_length": "lorarun uses CLIP's 75-token window",
    "seed_everything": "seed is always set",
}

UNSUPPORTED: dict[str, str] = {
    "dataset_config": "a dataset-config TOML is not supported; set train_data_dir to the kohya folder instead",
    "datasets": "a dataset-config TOML is not supported; set train_data_dir to the kohya folder instead",
    "color_aug": "color_aug cannot be combined with cached latents; remove the key",
    "random_crop": "random_crop cannot be combined with cached latents; remove the key",
    "fp8_base": "fp8 base weights are not supported; lorarun quantises Flux with bitsandbytes: remove the key and "
    'set flux_quantization = "int8" (or "nf4") under [lorarun]',
    "blocks_to_swap": 'block swapping to the CPU is not supported; use flux_quantization = "nf4" under '
    "[lorarun] to fit a small GPU",
    "cpu_offload_checkpointing": "CPU offload of checkpoints is not supported; remove the key",
}

LORARUN_SECTION_KEYS = {
    "provider",
    "gpus",
    "gpu_count",
    "min_vram_gb",
    "max_price_per_hour",
    "max_cost",
    "min_reliability",
    "min_inet_down_mbps",
    "disk_gb",
    "interruptible",
    "max_bid_per_hour",
    "bid_margin",
    "max_interruptions",
    "secure_cloud_only",
    "regions",
    "image",
    "ssh_host",
    "ssh_port",
    "ssh_user",
    "ssh_key",
    "price_per_hour",
    "model_family",
    "sample_prompts_list",
    "name",
}
# [lorarun] keys for Flux that kohya has no key for → the job's `flux` section (image/flux_config.py)
LORARUN_FLUX_KEYS = {
    "flux_flavour": "flavour",
    "flux_quantization": "quantization",
    "flux_transformer": "transformer",
    "flux_network_target": "network_target",
    "flux_save_diffusers_format": "save_diffusers_format",
}


def load_kohya_toml(path: Path) -> Any:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    lorarun_section = raw.pop("lorarun", {}) or {}
    flat = _flatten(raw, path)
    sections: dict[str, dict[str, Any]] = {
        "model": {},
        "dataset": {},
        "training": {},
        "sample": {},
        "resources": {},
        "output": {},
        "flux": {},
    }
    notes: list[str] = []
    known = sorted([*KOHYA_KEYS, *IGNORED_KEYS, *UNSUPPORTED, "sdxl", "sample_prompts", "network_args"])
    refused: list[str] = []  # every refused key, one line each: a guide's TOML shows all its problems at once
    for key, value in flat.items():
        try:
            _map_key(key, value, path, sections, notes, known)
        except SpecError as exc:
            refused.append(str(exc))
    for key, value in lorarun_section.items():
        if key in LORARUN_FLUX_KEYS:
            sections["flux"][LORARUN_FLUX_KEYS[key]] = value
            continue
        if key in LORARUN_HOSTED_KEYS:  # captions, hub, notify (runner/job/hosted_spec.py)
            section, name = LORARUN_HOSTED_KEYS[key]
            sections.setdefault(section, {})[name] = value
            continue
        if key not in LORARUN_SECTION_KEYS:
            known_lorarun = sorted([*LORARUN_SECTION_KEYS, *LORARUN_FLUX_KEYS, *LORARUN_HOSTED_KEYS])
            refused.append(f"{path}: {unknown_key_message('[lorarun]', key, known_lorarun)}")
            continue
        if key == "model_family":
            sections["model"]["family"] = value
        elif key == "name":
            continue
        else:
            sections["resources"][key] = value
    if "family" not in sections["model"]:
        family = _guess_family(sections["model"].get("base", ""), flat)
        sections["model"]["family"] = family
        if family != "sd15":
            notes.append(f"model family guessed as {family} from the model name; set [lorarun] model_family to be sure")
    if sections["model"]["family"] == "flux" and "flavour" not in sections["flux"]:
        base = str(sections["model"].get("base", "")).lower()
        sections["flux"]["flavour"] = "schnell" if "schnell" in base else "krea" if "krea" in base else "dev"
    data = {
        "name": lorarun_section.get("name") or flat.get("output_name") or path.stem,
        **{k: v for k, v in sections.items() if v},
    }
    if not refused:
        return build_job(data, path, notes=tuple(notes))
    try:
        spec = build_job(data, path, notes=tuple(notes))
    except InvalidJob as exc:
        error = InvalidJob(refused + exc.problems)
        error.spec, error.failed_sections = getattr(exc, "spec", None), getattr(exc, "failed_sections", frozenset())
        raise error from None
    error = InvalidJob(refused)  # the refused keys are left out; validate judges the rest of the job
    error.spec, error.failed_sections = spec, frozenset()
    raise error


def _map_key(
    key: str, value: Any, path: Path, sections: dict[str, dict[str, Any]], notes: list[str], known: list[str]
) -> None:
    """One flattened kohya key into its section (or a note); raises SpecError for a key lorarun refuses."""
    if key in UNSUPPORTED:
        raise SpecError(f"{path}: {key}: {UNSUPPORTED[key]}")
    if key in IGNORED_KEYS:
        notes.append(f"{key}: ignored ({IGNORED_KEYS[key]})")
        _check_ignored_value(key, value, path)
        return
    if key == "sdxl":
        if value is True:
            sections["model"]["family"] = "sdxl"
        return
    if key == "sample_prompts":
        sections["sample"]["prompts"] = _read_prompts(path, value)
        return
    if key == "network_args":
        sections["training"].update(_network_args(value, path))
        return
    if key not in KOHYA_KEYS:
        if key in KOHYA_OPTIONS:
            raise SpecError(
                f"{path}: {key}: known kohya option, not supported by lorarun yet; remove it (README: kohya options)"
            )
        raise SpecError(f"{path}: {unknown_key_message('kohya key', key, known)}")
    section, name = KOHYA_KEYS[key]
    sections[section][name] = _normalise(key, value, path)


def _flatten(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            if isinstance(v, dict):
                raise SpecError(f"{path}: {key}.{k}: nested tables are not part of kohya's training TOML")
            if k in flat and flat[k] != v:
                raise SpecError(f"{path}: {k}: set twice with different values")
            flat[k] = v
    return flat


# networks.lora network_args lorarun implements → the training field (kohya's own names)
NETWORK_ARGS = {
    "conv_dim": "conv_dim",
    "conv_alpha": "conv_alpha",
    "rank_dropout": "rank_dropout",
    "module_dropout": "module_dropout",
}


def _network_args(value: Any, path: Path) -> dict[str, Any]:
    """kohya's network_args: a list of "key=value" strings (`--network_args "conv_dim=4" "conv_alpha=1"`)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise SpecError(f'{path}: network_args: expected a list of "key=value" strings, e.g. ["conv_dim=8"]')
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep:
            raise SpecError(f"{path}: network_args: {item!r} is not of the form key=value")
        if key in NETWORK_ARGS:
            out[NETWORK_ARGS[key]] = raw  # converted and range-checked by the job schema
        elif key in KOHYA_NETWORK_ARGS:
            raise SpecError(
                f"{path}: network_args: {key}: known kohya network argument, not supported by lorarun "
                f"yet; remove it (supported: {', '.join(NETWORK_ARGS)})"
            )
        else:
            raise SpecError(
                f"{path}: network_args: {key!r} is not an argument of kohya's networks.lora(_flux) "
                f"(lorarun supports {', '.join(NETWORK_ARGS)})"
            )
    return out


# kohya matches optimizer names case-insensitively ("adamw8bit", "AdamW8bit", "Lion"): lower-case → lorarun name
OPTIMIZER_NAMES = {
    name.lower(): name
    for name in (
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
}


def _normalise(key: str, value: Any, path: Path) -> Any:
    if key == "optimizer_type" and isinstance(value, str):
        if value == "":
            return "AdamW"  # kohya's default
        if value.lower() in OPTIMIZER_NAMES:
            return OPTIMIZER_NAMES[value.lower()]
        if value.lower() in KOHYA_OPTIMIZERS or "." in value:
            raise SpecError(
                f"{path}: optimizer_type: {value} is a known kohya optimizer, not supported by lorarun "
                f"yet; use one of {', '.join(OPTIMIZER_NAMES.values())}"
            )
        return value
    if key == "lr_scheduler" and isinstance(value, str):
        from lorarun.image.engine_config import SCHEDULERS

        if value not in SCHEDULERS and value.split(":")[0] in KOHYA_SCHEDULERS:
            raise SpecError(
                f"{path}: lr_scheduler: {value} is a known kohya scheduler, not supported by lorarun "
                f"yet; use one of {', '.join(SCHEDULERS)}"
            )
        return value
    if key in ("lr_scheduler_args", "optimizer_args") and isinstance(value, str):
        return value.split()  # kohya's command line takes them space-separated
    if key == "text_encoder_lr" and isinstance(value, list):
        return value[0] if value else None  # kohya allows one lr per text encoder; we use one for both
    if key == "lr_warmup_steps" and isinstance(value, float) and value >= 1:
        return int(value)
    return value


def _check_ignored_value(key: str, value: Any, path: Path) -> None:
    if key == "save_model_as" and value not in ("safetensors", None):
        raise SpecError(f"{path}: save_model_as: only 'safetensors' is supported, got {value!r}")
    if key == "network_module" and value not in ("networks.lora", "networks.lora_flux", None):
        raise SpecError(
            f"{path}: network_module: only 'networks.lora' (and 'networks.lora_flux' for Flux) is "
            f"supported, got {value!r}"
        )


def _read_prompts(path: Path, value: Any) -> list[str]:
    """kohya's sample_prompts is a text file, one prompt a line (options after ' --' are dropped)."""
    prompt_file = Path(str(value)).expanduser()
    if not prompt_file.is_absolute():
        prompt_file = path.parent / prompt_file
    if not prompt_file.is_file():
        raise SpecError(f"{path}: sample_prompts: file {prompt_file} not found")
    prompts = []
    for line in prompt_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(line.split(" --")[0].strip())
    return prompts


def _guess_family(base: str, flat: dict[str, Any]) -> str:
    module = str(flat.get("network_module", ""))
    if "flux" in module or "flux" in base.lower():
        return "flux"
    if "xl" in Path(base).name.lower():
        return "sdxl"
    return "sd15"
