"""verify_outputs: the downloaded files against the engine's manifest, and each .safetensors against its header."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lorarun.runner.run.verify import OutputsCorrupt, inspect_safetensors, verify_outputs


def make_lora(path: Path, dim: int = 4) -> None:
    tensors = {
        "lora_unet_down_blocks_0_attn1_to_q.lora_down.weight": np.ones((dim, 32), dtype=np.float16),
        "lora_unet_down_blocks_0_attn1_to_q.lora_up.weight": np.zeros((32, dim), dtype=np.float16),
        "lora_unet_down_blocks_0_attn1_to_q.alpha": np.array(2.0, dtype=np.float32),
    }
    save_file(
        tensors,
        str(path),
        metadata={"ss_network_dim": str(dim), "ss_network_alpha": "2.0", "ss_network_module": "networks.lora"},
    )


def entry(root: Path, rel: str, kind: str) -> dict:
    data = (root / rel).read_bytes()
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "kind": kind}


@pytest.fixture
def outputs(tmp_path: Path) -> tuple[Path, dict]:
    (tmp_path / "samples").mkdir()
    make_lora(tmp_path / "lora.safetensors")
    (tmp_path / "samples" / "grid.png").write_bytes(b"\x89PNG fake grid")
    manifest = {
        "files": [entry(tmp_path, "lora.safetensors", "final"), entry(tmp_path, "samples/grid.png", "grid")],
        "updated": 1.0,
    }
    return tmp_path, manifest


def test_good_outputs_pass_and_report_lora_metadata(outputs):
    root, manifest = outputs
    report = verify_outputs(root, manifest)
    assert report.ok and report.errors == ()
    report.raise_if_bad()
    lora = report.files[0]
    assert lora.safetensors is not None
    assert (lora.safetensors.tensors, lora.safetensors.network_dim, lora.safetensors.network_alpha) == (3, "4", "2.0")
    assert report.files[1].safetensors is None and report.files[1].kind == "grid"


def test_one_corrupted_byte_is_a_sha_mismatch_naming_the_file(outputs):
    root, manifest = outputs
    path = root / "lora.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside tensor data: the header still parses, only the hash can tell
    path.write_bytes(bytes(data))

    report = verify_outputs(root, manifest)

    assert not report.ok
    assert len(report.errors) == 1
    assert report.errors[0].startswith("lora.safetensors: sha256 mismatch")
    with pytest.raises(OutputsCorrupt, match="lora.safetensors: sha256 mismatch"):
        report.raise_if_bad()


def test_truncated_safetensors_is_a_header_error(tmp_path):
    make_lora(tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-10])
    # A manifest that describes the truncated file, as an engine killed mid-write would produce.
    report = verify_outputs(tmp_path, {"files": [entry(tmp_path, "cut.safetensors", "checkpoint")]})
    assert not report.ok
    assert report.errors[0].startswith("cut.safetensors: not a loadable .safetensors: truncated: tensor")


def test_size_mismatch_and_missing_file_are_reported_together(outputs):
    root, manifest = outputs
    (root / "samples" / "grid.png").write_bytes(b"short")
    manifest["files"].append({"path": "last.safetensors", "sha256": "0" * 64, "size": 10, "kind": "checkpoint"})

    errors = verify_outputs(root, manifest).errors

    assert errors == (
        "samples/grid.png: size 5 bytes, manifest says 14",
        "last.safetensors: missing: listed in the manifest but not downloaded",
    )


@pytest.mark.parametrize("bad_path", ["/etc/passwd", "../outside.bin", "a/../../b", ""])
def test_manifest_paths_cannot_escape_the_output_folder(tmp_path, bad_path):
    report = verify_outputs(tmp_path, {"files": [{"path": bad_path, "sha256": "0" * 64, "size": 1}]})
    assert not report.ok and "unsafe path" in report.errors[0]


def test_manifest_without_files_list_is_rejected(tmp_path):
    with pytest.raises(OutputsCorrupt, match="no `files` list"):
        verify_outputs(tmp_path, {"updated": 1})


def write_raw(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None),
        ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, r"do not hold F32 \[3\]"),
        ({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
        ({"w": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "lacks dtype, shape or data_offsets"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "truncated: tensor 'w'"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "safetensors refused it"),
    ],
)
def test_header_checks(tmp_path, header, data, message):
    path = write_raw(tmp_path / "x.safetensors", header, data)
    if message is None:
        assert inspect_safetensors(path).tensors == 1
    else:
        with pytest.raises(ValueError, match=message):
            inspect_safetensors(path)


def test_garbage_start_of_file_is_not_mistaken_for_a_header(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not plausible"):
        inspect_safetensors(path)
    path.write_bytes(b"\x05\0\0\0\0\0\0\0{oops")
    with pytest.raises(ValueError, match="not JSON"):
        inspect_safetensors(path)
    path.write_bytes(b"\x02\0")
    with pytest.raises(ValueError, match="shorter than the 8-byte header length"):
        inspect_safetensors(path)


@pytest.mark.parametrize("dtype, bad", [(np.float16, np.nan), (np.float32, np.inf), (np.float64, -np.inf)])
def test_a_nan_or_inf_tensor_fails_verification(tmp_path, dtype, bad):
    """network_alpha: .nan once produced a LoRA whose every tensor was NaN, reported finished and verified."""
    weights = np.ones((4, 32), dtype=dtype)
    weights[1, 3] = bad
    save_file(
        {"lora_unet_x.lora_down.weight": weights, "lora_unet_x.alpha": np.array(2.0, dtype=np.float32)},
        str(tmp_path / "lora.safetensors"),
    )
    report = verify_outputs(tmp_path, {"files": [entry(tmp_path, "lora.safetensors", "final")]})
    assert not report.ok
    (error,) = report.errors
    assert "lora.safetensors" in error and "NaN or infinity" in error and "lora_unet_x.lora_down.weight" in error
    with pytest.raises(OutputsCorrupt, match="NaN or infinity"):
        report.raise_if_bad()


def test_bf16_and_fp8_are_checked_by_their_bits(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    good = {"a": torch.ones(8, dtype=torch.bfloat16)}
    save_torch(good, str(tmp_path / "good.safetensors"))
    assert inspect_safetensors(tmp_path / "good.safetensors").tensors == 1
    for name, tensor in (
        ("bf16", torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)),
        ("bf16inf", torch.tensor([float("-inf"), 2.0], dtype=torch.bfloat16)),
        ("e4m3", torch.tensor([1.0, float("nan")]).to(torch.float8_e4m3fn)),
        ("e5m2", torch.tensor([float("inf"), 1.0]).to(torch.float8_e5m2)),
    ):
        path = tmp_path / f"{name}.safetensors"
        save_torch({"t": tensor, "ok": torch.ones(2)}, str(path))
        with pytest.raises(Exception, match="NaN or infinity"):
            inspect_safetensors(path)


def test_integer_tensors_and_large_finite_values_pass(tmp_path):
    save_file(
        {"steps": np.array([2**31 - 1], dtype=np.int32), "big": np.array([65504.0], dtype=np.float16)},
        str(tmp_path / "x.safetensors"),
    )
    assert inspect_safetensors(tmp_path / "x.safetensors").tensors == 2
