"""sd-scripts' own ModelSpec and tag-frequency writers, transcribed (kohya-ss/sd-scripts commit 10bfcb9a:
library/sai_model_spec.py `determine_architecture`, `determine_implementation`, `determine_resolution`,
`build_metadata_dataclass` → `to_metadata_dict`; library/train_util.py `get_sai_model_spec_dataclass` (how
train_network.py calls it) and `BaseDataset.set_tag_frequency`) so lorarun's metadata can be checked against
them. Only the LoRA path of SD1.x/2.x/SDXL is transcribed; two things differ from the source, both marked: the
implementation version is passed in (kohya runs `git rev-parse`), and the thumbnail handling is gone.
"""

from __future__ import annotations

import datetime


def determine_architecture(v2, v_parameterization, sdxl, lora, textual_inversion, model_config=None):
    model_config = model_config or {}
    if sdxl:
        arch = "stable-diffusion-xl-v1-base"
    elif v2:
        arch = "stable-diffusion-v2-768-v" if v_parameterization else "stable-diffusion-v2-512"
    else:
        arch = "stable-diffusion-v1"
    if lora:
        arch += "/lora"
    elif textual_inversion:
        arch += "/textual-inversion"
    return arch


def determine_implementation(lora, textual_inversion, sdxl, model_config=None, is_stable_diffusion_ckpt=None):
    if (lora and sdxl) or textual_inversion or is_stable_diffusion_ckpt:
        return "https://github.com/Stability-AI/generative-models"
    return "diffusers"


def determine_resolution(reso=None, sdxl=False, model_config=None, v2=False, v_parameterization=False):
    if reso is not None:
        if isinstance(reso, str):
            reso = tuple(map(int, reso.split(",")))
        if isinstance(reso, int):
            reso = (reso, reso)
        if len(reso) == 1:
            reso = (reso[0], reso[0])
    elif sdxl:
        reso = (1024, 1024)
    elif v2 and v_parameterization:
        reso = (768, 768)
    else:
        reso = (512, 512)
    return f"{reso[0]}x{reso[1]}"


def build_metadata(
    v2,
    v_parameterization,
    sdxl,
    timestamp,
    title,
    reso,
    timesteps=None,
    clip_skip=None,
    optional_metadata=None,
    implementation_version="sd-scripts/unknown",  # DIFFERS: kohya asks git for its commit
):
    """`build_metadata_dataclass(...).to_metadata_dict()` for a LoRA (lora=True, textual_inversion=False)."""
    fields = {
        "architecture": determine_architecture(v2, v_parameterization, sdxl, True, False),
        "implementation": determine_implementation(True, False, sdxl),
        "title": title,
        "resolution": determine_resolution(reso, sdxl, None, v2, v_parameterization),
        "date": datetime.datetime.fromtimestamp(int(timestamp)).isoformat(),
        "sai_model_spec": "1.0.1",
        "prediction_type": "v" if v_parameterization else "epsilon",
    }
    if timesteps is not None:
        fields["timestep_range"] = f"{timesteps[0]},{timesteps[1]}"
    if clip_skip is not None:
        fields["encoder_layer"] = f"{clip_skip}"
    extra = dict(optional_metadata or {})
    extra.setdefault("implementation_version", implementation_version)
    out = {f"modelspec.{k}": v for k, v in fields.items() if v is not None}
    for key, value in extra.items():
        out[key if key.startswith("modelspec.") else f"modelspec.{key}"] = value
    return out


def timesteps_from_args(min_timestep, max_timestep):
    """train_util.get_sai_model_spec_dataclass: (min or 0, max or 1000) when either is given, else None."""
    if min_timestep is not None or max_timestep is not None:
        return (min_timestep if min_timestep is not None else 0, max_timestep if max_timestep is not None else 1000)
    return None


def tag_frequency(dir_captions: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """BaseDataset.set_tag_frequency over each folder's captions."""
    out: dict[str, dict[str, int]] = {}
    for dir_name, captions in dir_captions.items():
        frequency_for_dir = out.get(dir_name, {})
        out[dir_name] = frequency_for_dir
        for caption in captions:
            for tag in caption.split(","):
                tag = tag.strip()
                if tag:
                    tag = tag.lower()
                    frequency_for_dir[tag] = frequency_for_dir.get(tag, 0) + 1
    return out
