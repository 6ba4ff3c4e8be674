"""Writing the LoRA file in kohya's format: key names (kohya_keys), the true alpha, kohya's `ss_*` metadata, the
SAI ModelSpec keys, and `sshs_model_hash` / `sshs_legacy_hash` computed exactly as sd-scripts does
(`train_util.precalculate_safetensors_hashes`: serialise with only the `ss_*` metadata, hash the bytes after the
header; legacy = sha256 of 64 KiB at offset 1 MiB, first 8 hex). A1111 shows sshs_model_hash as the LoRA's hash.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save, save_file

from lorarun.image.engine.kohya_keys import is_conv3x3_target, kohya_tensor_keys, plan_modules
from lorarun.image.engine.modelspec_extra import modelspec_additions

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}
MODELSPEC_VERSION = "1.0.1"


def kohya_state_dict(
    components: list[tuple[str, dict[str, torch.Tensor]]],
    family: str,
    alpha: float,
    dtype: torch.dtype,
    layers_per_block: int = 2,
    conv_alpha: float | None = None,
) -> dict[str, torch.Tensor]:
    """components: (kohya component, PEFT state dict) pairs — ("unet", …), ("lora_te", …) / ("lora_te1", …).
    conv_alpha: the alpha of LoCon's 3x3 UNet convs (kohya stores each module's own alpha)."""
    out: dict[str, torch.Tensor] = {}
    for component, peft_sd in components:
        for module in plan_modules(list(peft_sd), component, family, layers_per_block):
            down_key, up_key, alpha_key = kohya_tensor_keys(module.name)
            out[down_key] = peft_sd[module.down_key].detach().to("cpu", dtype).contiguous()
            out[up_key] = peft_sd[module.up_key].detach().to("cpu", dtype).contiguous()
            own = (
                conv_alpha
                if conv_alpha is not None and component == "unet" and is_conv3x3_target(module.path)
                else alpha
            )
            out[alpha_key] = torch.tensor(float(own), dtype=dtype)  # kohya saves alpha in the save dtype too
    return out


def _hash_after_header(buf: io.BytesIO) -> str:
    buf.seek(0)
    n = int.from_bytes(buf.read(8), "little")
    buf.seek(n + 8)
    h = hashlib.sha256()
    for chunk in iter(lambda: buf.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _legacy_hash(buf: io.BytesIO) -> str:
    buf.seek(0x100000)
    return hashlib.sha256(buf.read(0x10000)).hexdigest()[:8]


def kohya_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as sd-scripts computes them."""
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    buf = io.BytesIO(save(tensors, ss_only))
    return _hash_after_header(buf), _legacy_hash(buf)


def write_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write atomically (tmp + os.replace): the controller may pull the file the moment it is listed."""
    metadata = dict(metadata)
    metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = kohya_hashes(tensors, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata)
    os.chmod(tmp, 0o644)  # safetensors creates 0600; the file is meant to be pulled and shared
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class RunFacts:
    """What the metadata says about the run; fixed when training starts."""

    session_id: str
    started_at: float
    family: str
    v2: bool
    v_parameterization: bool
    base_model: str
    resolution: tuple[int, int]
    num_train_images: int
    num_reg_images: int
    num_batches_per_epoch: int
    num_epochs: int
    max_train_steps: int
    warmup_steps: int
    optimizer: str
    mixed_precision: str
    num_processes: int = 1
    dataset_dirs: dict = field(default_factory=dict)
    reg_dataset_dirs: dict = field(default_factory=dict)
    tag_frequency: dict = field(default_factory=dict)
    bucket_info: dict = field(default_factory=dict)


def base_model_version(family: str, v2: bool, v_param: bool) -> str:
    if family == "sdxl":
        return "sdxl_base_v1-0"
    return ("sd_v2" if v2 else "sd_v1") + ("_v" if v_param else "")


def modelspec_architecture(family: str, v2: bool, v_param: bool) -> str:
    if family == "sdxl":
        arch = "stable-diffusion-xl-v1-base"
    elif v2:
        arch = "stable-diffusion-v2-768-v" if v_param else "stable-diffusion-v2-512"
    else:
        arch = "stable-diffusion-v1"
    return arch + "/lora"


def build_metadata(cfg, facts: RunFacts, *, steps: int, epoch: int, finished_at: float) -> dict[str, str]:
    """kohya's ss_* keys (train_network.py) and ModelSpec keys (sai_model_spec.py); all values are strings."""
    t, d, m = cfg.training, cfg.dataset, cfg.model
    unet_lr = t.unet_lr if t.unet_lr is not None else t.learning_rate
    te_lr = t.text_encoder_lr if t.text_encoder_lr is not None else t.learning_rate
    res = f"({facts.resolution[0]}, {facts.resolution[1]})"
    md = {
        "ss_session_id": facts.session_id,
        "ss_training_started_at": str(facts.started_at),
        "ss_training_finished_at": str(finished_at),
        "ss_output_name": cfg.output_name,
        "ss_learning_rate": str(t.learning_rate),
        "ss_text_encoder_lr": str(te_lr if t.trains_text_encoder else 0),
        "ss_unet_lr": str(unet_lr),
        "ss_num_train_images": str(facts.num_train_images),
        "ss_num_reg_images": str(facts.num_reg_images),
        "ss_num_batches_per_epoch": str(facts.num_batches_per_epoch),
        "ss_num_epochs": str(facts.num_epochs),
        "ss_epoch": str(epoch),
        "ss_steps": str(steps),
        "ss_max_train_steps": str(facts.max_train_steps),
        "ss_gradient_checkpointing": str(t.gradient_checkpointing),
        "ss_gradient_accumulation_steps": str(t.gradient_accumulation_steps),
        "ss_lr_warmup_steps": str(facts.warmup_steps),
        "ss_lr_scheduler": t.lr_scheduler,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(t.network_dim),
        "ss_network_alpha": _num(t.network_alpha),
        "ss_network_dropout": str(t.network_dropout),
        "ss_network_args": json.dumps(_network_args(t)),
        "ss_network_train_unet_only": str(not t.trains_text_encoder),
        "ss_mixed_precision": facts.mixed_precision,
        "ss_full_fp16": "False",
        "ss_v2": str(m.v2),
        "ss_base_model_version": base_model_version(facts.family, m.v2, m.v_parameterization),
        "ss_clip_skip": str(m.clip_skip),
        "ss_max_token_length": "None",
        "ss_cache_latents": str(t.cache_latents),
        "ss_seed": str(t.seed),
        "ss_noise_offset": str(t.noise_offset),
        "ss_min_snr_gamma": str(t.min_snr_gamma),
        "ss_max_grad_norm": str(t.max_grad_norm),
        "ss_optimizer": facts.optimizer + (f"({','.join(t.optimizer_args)})" if t.optimizer_args else ""),
        "ss_caption_dropout_rate": str(d.caption_dropout_rate),
        "ss_caption_dropout_every_n_epochs": "0",
        "ss_caption_tag_dropout_rate": str(d.caption_tag_dropout_rate),
        "ss_prior_loss_weight": str(d.prior_loss_weight),
        "ss_loss_type": t.loss_type,
        "ss_huber_schedule": t.huber_schedule,
        "ss_huber_scale": str(t.huber_scale),
        "ss_huber_c": str(t.huber_c),
        "ss_multires_noise_iterations": str(t.multires_noise_iterations),
        "ss_multires_noise_discount": str(t.multires_noise_discount),
        "ss_adaptive_noise_scale": str(t.adaptive_noise_scale),
        "ss_zero_terminal_snr": str(t.zero_terminal_snr),
        "ss_scale_weight_norms": str(t.scale_weight_norms),
        "ss_ip_noise_gamma": str(t.ip_noise_gamma),
        "ss_debiased_estimation": str(t.debiased_estimation_loss),
        "ss_noise_offset_random_strength": str(t.noise_offset_random_strength),
        "ss_ip_noise_gamma_random_strength": str(t.ip_noise_gamma_random_strength),
        "ss_fp8_base": "False",
        "ss_training_comment": f"lorarun job {cfg.job_id}",
        "ss_sd_model_name": os.path.basename(facts.base_model.rstrip("/")) or facts.base_model,
        "ss_new_sd_model_hash": "",
        "ss_sd_scripts_commit_hash": "",
        "ss_batch_size_per_device": str(t.batch_size),
        "ss_total_batch_size": str(t.batch_size * t.gradient_accumulation_steps * facts.num_processes),
        "ss_resolution": res,
        "ss_color_aug": "False",
        "ss_flip_aug": str(d.flip_aug),
        "ss_random_crop": "False",
        "ss_shuffle_caption": str(d.shuffle_caption),
        "ss_enable_bucket": str(d.enable_bucket),
        "ss_bucket_no_upscale": str(d.bucket_no_upscale),
        "ss_min_bucket_reso": str(d.min_bucket_reso),
        "ss_max_bucket_reso": str(d.max_bucket_reso),
        "ss_keep_tokens": str(d.keep_tokens),
        "ss_dataset_dirs": json.dumps(facts.dataset_dirs),
        "ss_reg_dataset_dirs": json.dumps(facts.reg_dataset_dirs),
        "ss_tag_frequency": json.dumps(facts.tag_frequency),
        "ss_bucket_info": json.dumps(facts.bucket_info),
    }
    md.update(
        {
            "modelspec.sai_model_spec": MODELSPEC_VERSION,
            "modelspec.architecture": modelspec_architecture(facts.family, m.v2, m.v_parameterization),
            # kohya: SDXL LoRA → Stability's implementation; SD1/2 LoRA → diffusers.
            "modelspec.implementation": (
                "https://github.com/Stability-AI/generative-models" if facts.family == "sdxl" else "diffusers"
            ),
            "modelspec.title": cfg.output_name,
            "modelspec.date": datetime.datetime.fromtimestamp(int(facts.started_at)).isoformat(),
            "modelspec.resolution": f"{facts.resolution[0]}x{facts.resolution[1]}",
            "modelspec.prediction_type": "v" if m.v_parameterization else "epsilon",
            "modelspec.encoder_layer": str(m.clip_skip),
        }
    )
    md.update(modelspec_additions(cfg, facts.dataset_dirs))  # trigger phrase, timestep range, version
    return md


def _network_args(t) -> dict[str, str]:
    """kohya's ss_network_args: the network_args that were given, as strings (kohya stores them so)."""
    args = {
        key: str(getattr(t, key))
        for key in ("conv_dim", "conv_alpha", "rank_dropout", "module_dropout")
        if getattr(t, key) is not None
    }
    if t.conv_dim is not None and t.conv_alpha is None:
        args["conv_alpha"] = "1.0"  # kohya's default, which is what was trained with
    return args


def _num(x: float) -> str:
    """kohya writes the alpha as the number given (16 → "16", 0.5 → "0.5")."""
    return str(int(x)) if float(x).is_integer() else str(x)
