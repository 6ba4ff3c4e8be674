"""A Flux job's model files, checked by their headers at validate, and uploaded with the engine config rewritten."""

import json
import struct
from pathlib import Path

from lorarun.runner.job.flux_files import flux_problems, upload
from lorarun.runner.job.load import load_job

BFL = ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "img_in.weight"]


def safetensors_file(path: Path, keys: list[str]) -> Path:
    """A real safetensors file (header + data) with one 2-byte tensor per key."""
    header, offset = {}, 0
    for key in keys:
        header[key] = {"dtype": "F16", "shape": [1], "data_offsets": [offset, offset + 2]}
        offset += 2
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


def flux_job(tmp_path: Path, flux: str) -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(f"model:\n  family: flux\n  base: black-forest-labs/FLUX.1-dev\nflux:\n{flux}")
    return job


def test_transformer_file_checked_against_the_flavour(tmp_path):
    safetensors_file(tmp_path / "schnell-ft.safetensors", BFL)  # no guidance_in: a schnell model
    safetensors_file(tmp_path / "dev2pro.safetensors", BFL + ["guidance_in.in_layer.weight"])
    spec = load_job(flux_job(tmp_path, "  flavour: dev\n  transformer: ./schnell-ft.safetensors\n"))
    (line,) = flux_problems(spec, cuda=True)
    assert "flux.transformer: schnell-ft.safetensors has no guidance input" in line and "flavour: schnell" in line
    assert flux_problems(load_job(flux_job(tmp_path, "  transformer: ./dev2pro.safetensors\n")), cuda=True) == []


def test_wrong_or_missing_files_and_quantisation_without_cuda(tmp_path):
    safetensors_file(
        tmp_path / "sd15.safetensors",
        ["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.text_model.x.weight"],
    )
    spec = load_job(
        flux_job(
            tmp_path, "  transformer: ./sd15.safetensors\n  t5xxl: ./t5xxl_fp16.safetensors\n  quantization: nf4\n"
        )
    )
    problems = flux_problems(spec, cuda=False)
    assert any("flux.quantization: nf4 needs a CUDA GPU" in p for p in problems)
    assert any(
        "flux.transformer: sd15.safetensors is a SD1.x checkpoint, not a Flux.1 transformer" in p for p in problems
    )
    assert any("flux.t5xxl:" in p and "does not exist" in p for p in problems)


def test_upload_puts_the_files_beside_the_job_and_rewrites_the_engine_config(tmp_path):
    safetensors_file(tmp_path / "dev2pro.safetensors", BFL + ["guidance_in.in_layer.weight"])
    safetensors_file(tmp_path / "ae.safetensors", ["decoder.conv_in.weight"])
    spec = load_job(flux_job(tmp_path, "  transformer: ./dev2pro.safetensors\n  ae: ./ae.safetensors\n"))
    sent = []

    class Transport:
        def put_file(self, local, remote):
            sent.append((Path(local).name, remote))

    class Layout:
        def path(self, *parts):
            return "/job/" + "/".join(parts)

    cfg = upload(
        spec,
        spec.engine_config(job_id="j", dataset_dir="/d", reg_dir=None, output_dir="/o"),
        Transport(),
        Layout(),
        announce=lambda line: None,
    )
    assert sorted(sent) == [
        ("ae.safetensors", "/job/model/ae.safetensors"),
        ("dev2pro.safetensors", "/job/model/dev2pro.safetensors"),
    ]
    assert cfg.flux.transformer == "/job/model/dev2pro.safetensors" and cfg.flux.ae == "/job/model/ae.safetensors"
    assert cfg.model.base == "black-forest-labs/FLUX.1-dev"
