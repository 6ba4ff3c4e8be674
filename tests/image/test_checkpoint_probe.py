"""The single-file checkpoint probe: real files in each format, recognised from their tensor names without torch.

Safetensors files are written byte for byte as the format's README defines them (8-byte length, JSON header, data);
.ckpt files are written by torch.save itself when torch is installed, and the LDM checkpoints by the same converter
the engine's single-file test uses."""

from __future__ import annotations

import json
import struct

import pytest
from helpers_dataset import make_dataset, write_job

from lorarun.image.checkpoint_probe import NotACheckpoint, probe_checkpoint
from lorarun.runner.errors import SpecError
from lorarun.runner.job.validate import validate_job

SD1 = [
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    "first_stage_model.decoder.conv_in.weight",
]
SD2 = [
    "model.diffusion_model.input_blocks.0.0.weight",
    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
    "first_stage_model.decoder.conv_in.weight",
]
SDXL = [
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.label_emb.0.0.weight",
    "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
    "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
    "first_stage_model.decoder.conv_in.weight",
]
FLUX_BFL = [
    "img_in.weight",
    "double_blocks.0.img_attn.qkv.weight",
    "single_blocks.0.linear1.weight",
    "guidance_in.in_layer.weight",
]
FLUX_COMFY = ["model.diffusion_model." + k for k in FLUX_BFL[:3]] + [
    "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight",
    "vae.decoder.conv_in.weight",
]
FLUX_DIFFUSERS = [
    "x_embedder.weight",
    "transformer_blocks.0.attn.to_q.weight",
    "single_transformer_blocks.0.attn.to_q.weight",
]


def write_safetensors(path, names, shapes=None, metadata=None):
    """A valid safetensors file: each tensor F16 with the given shape (default [2]), zero-filled."""
    header, offset = {}, 0
    for name in names:
        shape = (shapes or {}).get(name, [2])
        size = 2
        for d in shape:
            size *= d
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


@pytest.mark.parametrize(
    "names, family, extra",
    [
        (SD1, "sd15", {"sd2": False}),
        (SD2, "sd15", {"sd2": True}),
        (SDXL, "sdxl", {}),
        (FLUX_BFL, "flux", {"transformer_only": True, "guidance_embed": True}),
        (FLUX_BFL[:3], "flux", {"transformer_only": True, "guidance_embed": False}),  # schnell: no guidance_in
        (FLUX_COMFY, "flux", {"transformer_only": False}),
        (FLUX_DIFFUSERS, "flux", {"transformer_only": True}),
    ],
)
def test_safetensors_family_from_keys(tmp_path, names, family, extra):
    info = probe_checkpoint(write_safetensors(tmp_path / "m.safetensors", names, metadata={"format": "pt"}))
    assert info.family == family and info.file_format == "safetensors"
    for field, value in extra.items():
        assert getattr(info, field) == value, field


def test_unet_only_sd_file_is_told_apart_by_cross_attention_width(tmp_path):
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    for width, family, sd2 in [(768, "sd15", False), (1024, "sd15", True), (2048, "sdxl", None)]:
        path = write_safetensors(
            tmp_path / f"u{width}.safetensors",
            ["model.diffusion_model.input_blocks.0.0.weight", key],
            {key: [4, width]},
        )
        info = probe_checkpoint(path)
        assert (info.family, info.sd2) == (family, sd2)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"hello world\n", "not a safetensors file"),  # the 12-byte text file
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 2132625894\n", "git-LFS pointer"),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>" * 3, "HTML page"),
        (b"tiny", "far too small"),
        (struct.pack("<Q", 5) + b"[1,2]", "header is not a JSON object"),
        (struct.pack("<Q", 6) + b"nope!!", "header is not JSON"),
    ],
)
def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path, content, expected):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(NotACheckpoint, match=expected):
        probe_checkpoint(path)


def test_truncated_download_and_lora_and_refiner_are_refused(tmp_path):
    path = write_safetensors(tmp_path / "cut.safetensors", SD1)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(NotACheckpoint, match="truncated"):
        probe_checkpoint(path)
    lora = write_safetensors(
        tmp_path / "lora.safetensors", ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"]
    )
    with pytest.raises(NotACheckpoint, match="is a LoRA"):
        probe_checkpoint(lora)
    refiner = write_safetensors(
        tmp_path / "refiner.safetensors",
        [
            "model.diffusion_model.label_emb.0.0.weight",
            "conditioner.embedders.0.model.transformer.resblocks.0.ln_1.weight",
        ],
    )
    with pytest.raises(NotACheckpoint, match="refiner"):
        probe_checkpoint(refiner)
    vae = write_safetensors(tmp_path / "vae.safetensors", ["encoder.conv_in.weight", "decoder.conv_in.weight"])
    with pytest.raises(NotACheckpoint, match="VAE"):
        probe_checkpoint(vae)


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_ckpt_written_by_torch_is_read_without_unpickling(tmp_path, zipfile_format, monkeypatch):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.ckpt"
    state = {"state_dict": {k: torch.zeros(2) for k in SDXL}, "global_step": 10}
    torch.save(state, path, _use_new_zipfile_serialization=zipfile_format)
    import pickle

    def refuse(*a, **k):  # the probe must never execute the pickle
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    info = probe_checkpoint(path)
    assert (info.family, info.file_format) == ("sdxl", "ckpt")


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_ldm_checkpoint_of_the_tiny_model_is_recognised(tmp_path, family):
    pytest.importorskip("torch")
    from safetensors.torch import save_file

    from lorarun.image.engine.tiny import build_tiny_pipeline
    from tests.image.engine.ldm_checkpoint import pipeline_to_ldm

    path = tmp_path / "tiny.safetensors"
    save_file(pipeline_to_ldm(build_tiny_pipeline(family)), str(path))
    info = probe_checkpoint(path)
    assert info.family == family
    if family == "sd15":
        assert info.sd2 is False


def _job_with_base(tmp_path, base: str, extra_model: str = "") -> object:
    make_dataset(tmp_path / "data", {"10_x": 2})
    job = write_job(tmp_path / "job.yaml", "data")
    job.write_text(job.read_text().replace("base: builtin:tiny-sd15", f"base: {base}{extra_model}"))
    return job


def test_validate_refuses_a_wrong_family_and_a_text_file(tmp_path):
    write_safetensors(tmp_path / "xl.safetensors", SDXL)
    with pytest.raises(
        SpecError,
        match=r"model.base: xl.safetensors is an SDXL checkpoint but model.family is "
        r"'sd15'; set model.family: sdxl",
    ):
        validate_job(_job_with_base(tmp_path, "./xl.safetensors"))
    (tmp_path / "model.safetensors").write_bytes(b"hello world\n")
    with pytest.raises(SpecError, match="model.base: model.safetensors is not a safetensors file"):
        validate_job(_job_with_base(tmp_path, "./model.safetensors"))


def test_validate_holds_sd2_files_against_the_v2_flag(tmp_path):
    write_safetensors(tmp_path / "sd2.safetensors", SD2)
    with pytest.raises(SpecError, match="SD2.x checkpoint but model.v2 is false; set model.v2: true"):
        validate_job(_job_with_base(tmp_path, "./sd2.safetensors"))
    write_safetensors(tmp_path / "sd1.safetensors", SD1)
    job = validate_job(_job_with_base(tmp_path, "./sd1.safetensors"))
    assert job.spec.model.family == "sd15"


def test_validate_takes_a_flux_transformer_file_and_holds_it_against_the_flavour(tmp_path):
    write_safetensors(tmp_path / "flux1-schnell.safetensors", FLUX_BFL[:3])  # transformer only, no guidance_in
    schnell = "\n  family: flux\nflux:\n  flavour: schnell\n  quantization: bf16"
    job = validate_job(_job_with_base(tmp_path, "./flux1-schnell.safetensors", schnell))
    assert job.spec.model.family == "flux" and job.spec.flux.flavour == "schnell"
    with pytest.raises(SpecError, match="flux1-schnell.safetensors has no guidance input .* set flux.flavour: schnell"):
        validate_job(_job_with_base(tmp_path, "./flux1-schnell.safetensors", "\n  family: flux"))
