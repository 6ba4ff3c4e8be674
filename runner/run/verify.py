"""Check the outputs brought home against the engine's manifest before the instance that made them is destroyed.

Two questions per file: is it the file the engine wrote (size and sha256 match `manifest.json`), and, for a
`.safetensors`, will A1111/ComfyUI load it and is it usable (the header parses, every tensor lies inside the
file, no float tensor holds NaN or infinity — a diverged run writes a LoRA that loads and ruins every image). The header is
read by hand first so that a truncated download gets a precise message, then through `safetensors.safe_open`,
which is what the loaders themselves use.

The manifest comes from the instance: its paths are treated as untrusted (no absolute paths, no `..`).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from lorarun.runner.errors import PipelineError
from lorarun.sshlink.sftp_io import sha256_file

# safetensors refuses headers above 100 MB; a length beyond that means the first 8 bytes are not a header.
MAX_HEADER_BYTES = 100_000_000
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


class OutputsCorrupt(PipelineError):
    """A downloaded output does not match the manifest or does not load."""


@dataclass(frozen=True)
class SafetensorsInfo:
    tensors: int
    network_dim: str | None  # kohya's ss_network_dim / ss_network_alpha, as stored (strings)
    network_alpha: str | None
    metadata_keys: int


@dataclass(frozen=True)
class FileCheck:
    path: str  # relative, as in the manifest
    kind: str
    size: int
    sha256: str  # what the manifest promised
    error: str | None = None  # None: the file is good
    safetensors: SafetensorsInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class VerifyReport:
    files: tuple[FileCheck, ...]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(f"{f.path}: {f.error}" for f in self.files if f.error)

    def raise_if_bad(self) -> None:
        if not self.ok:
            raise OutputsCorrupt("outputs failed verification: " + "; ".join(self.errors))


class SafetensorsError(ValueError):
    pass


def verify_outputs(local_dir: Path, manifest: Mapping[str, Any]) -> VerifyReport:
    """Check every file the manifest lists under `local_dir`; collect all problems instead of stopping at one."""
    entries = manifest.get("files")
    if not isinstance(entries, list):
        raise OutputsCorrupt("manifest.json has no `files` list")
    return VerifyReport(tuple(_check_entry(Path(local_dir), entry) for entry in entries))


def _check_entry(local_dir: Path, entry: Any) -> FileCheck:
    if not isinstance(entry, Mapping) or not {"path", "sha256", "size"} <= entry.keys():
        return FileCheck(str(entry)[:80], "?", 0, "", error="manifest entry lacks path, sha256 or size")
    rel, expected_sha, expected_size = str(entry["path"]), str(entry["sha256"]).lower(), int(entry["size"])
    check = FileCheck(rel, str(entry.get("kind") or ""), expected_size, expected_sha)
    if not _is_safe_relative(rel):
        return _with(check, error="unsafe path in the manifest (absolute or with '..')")
    path = local_dir / rel
    if not path.is_file():
        return _with(check, error="missing: listed in the manifest but not downloaded")
    size = path.stat().st_size
    if size != expected_size:
        return _with(check, error=f"size {size} bytes, manifest says {expected_size}")
    actual_sha = sha256_file(path)
    if actual_sha != expected_sha:
        return _with(check, error=f"sha256 mismatch: file {actual_sha[:16]}…, manifest {expected_sha[:16]}…")
    if path.suffix == ".safetensors":
        try:
            return _with(check, safetensors=inspect_safetensors(path))
        except SafetensorsError as exc:
            return _with(check, error=f"not a loadable .safetensors: {exc}")
    return check


def _with(check: FileCheck, **changes: Any) -> FileCheck:
    return replace(check, **changes)


def _is_safe_relative(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The parsed JSON header and the size of the data section; raises SafetensorsError saying what is wrong.

    Layout: 8-byte little-endian header length N, N bytes of JSON, then the tensor data. Each tensor's
    `data_offsets` are relative to the start of the data section.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"only {size} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES:
            raise SafetensorsError(f"header length {n} is not plausible (corrupt start of file)")
        if 8 + n > size:
            raise SafetensorsError(f"truncated: the header needs {8 + n} bytes, the file has {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SafetensorsError(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    return header, size - 8 - n


def _check_tensors(header: Mapping[str, Any], data_len: int) -> int:
    """Every tensor's offsets lie inside the data section and match its dtype and shape; returns the count."""
    count = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"tensor {name!r} lacks dtype, shape or data_offsets") from None
        if not (
            isinstance(shape, list)
            and all(isinstance(d, int) and d >= 0 for d in shape)
            and isinstance(begin, int)
            and isinstance(end, int)
        ):
            raise SafetensorsError(f"tensor {name!r} has a malformed shape or offsets")
        if dtype not in DTYPE_BYTES:
            raise SafetensorsError(f"tensor {name!r} has unknown dtype {dtype!r}")
        if end > data_len:
            raise SafetensorsError(f"truncated: tensor {name!r} ends at data byte {end}, the file holds {data_len}")
        if not 0 <= begin <= end:
            raise SafetensorsError(f"tensor {name!r} has invalid offsets {begin}..{end}")
        if (end - begin) != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise SafetensorsError(f"tensor {name!r}: {end - begin} bytes do not hold {dtype} {shape}")
        count += 1
    return count


# Floating-point dtypes and how to find a NaN/inf in their raw little-endian bits: numpy handles the IEEE ones;
# bf16 and the fp8 formats are tested by their exponent bits (numpy has no such dtypes).
_NUMPY_FLOATS = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}
_EXPONENT_ALL_ONES = {"BF16": ("<u2", 0x7F80), "F8_E5M2": ("u1", 0x7C)}  # exponent all ones: inf or NaN
_E4M3_NAN = 0x7F  # float8 e4m3fn has no infinity; S.1111.111 is its only NaN


def nonfinite_tensors(path: Path, header: Mapping[str, Any], data_len: int) -> list[str]:
    """Names of the float tensors that contain a NaN or an infinity (read in chunks; offsets already checked)."""
    import numpy as np

    bad = []
    start = 8 + (path.stat().st_size - 8 - data_len)  # the data section begins after the length and the header
    with open(path, "rb") as f:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = info["dtype"]
            if dtype not in _NUMPY_FLOATS and dtype not in _EXPONENT_ALL_ONES and dtype != "F8_E4M3":
                continue  # integer and boolean tensors are always finite
            begin, end = info["data_offsets"]
            f.seek(start + begin)
            raw = f.read(end - begin)
            if dtype in _NUMPY_FLOATS:
                finite = bool(np.isfinite(np.frombuffer(raw, dtype=_NUMPY_FLOATS[dtype])).all())
            elif dtype == "F8_E4M3":
                finite = not bool(((np.frombuffer(raw, dtype="u1") & 0x7F) == _E4M3_NAN).any())
            else:
                np_type, mask = _EXPONENT_ALL_ONES[dtype]
                finite = not bool(((np.frombuffer(raw, dtype=np_type) & mask) == mask).any())
            if not finite:
                bad.append(name)
    return bad


def inspect_safetensors(path: Path) -> SafetensorsInfo:
    header, data_len = read_safetensors_header(path)
    count = _check_tensors(header, data_len)
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise SafetensorsError("__metadata__ is not an object")
    # The loaders use the safetensors library; it checks what the hand-written pass does not (coverage of the
    # data section, overlapping tensors). keys() and metadata() read no tensor data.
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            loaded = len(list(f.keys()))
            metadata = f.metadata() or metadata
    except Exception as exc:  # the library raises its own SafetensorError and plain exceptions
        raise SafetensorsError(f"safetensors refused it: {exc}") from None
    if loaded != count:
        raise SafetensorsError(f"header lists {count} tensors, safetensors loaded {loaded}")
    bad = nonfinite_tensors(path, header, data_len)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise SafetensorsError(
            f"{len(bad)} tensor(s) hold NaN or infinity ({', '.join(bad[:3])}{more}); "
            f"the training diverged (lower the learning rate, check network_alpha)"
        )
    return SafetensorsInfo(
        tensors=count,
        network_dim=metadata.get("ss_network_dim"),
        network_alpha=metadata.get("ss_network_alpha"),
        metadata_keys=len(metadata),
    )
