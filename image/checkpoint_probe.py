"""Recognise a single-file checkpoint's model family from its tensor names, without torch and without loading it.

`validate` runs this on the laptop before anything is rented: a 12-byte text file named `model.safetensors`, a git-LFS
pointer, a truncated download, a LoRA given as a base model, or an SDXL file under `family: sd15` are all found here
for free instead of after boot and model load on a paid instance.

How each format is read (no code from the file is ever executed):
- `.safetensors`: 8-byte little-endian header length, then that many bytes of JSON mapping each tensor name to
  dtype/shape/data_offsets (format spec: huggingface/safetensors, README "Format").
- `.ckpt` (torch.save): a zip whose `<root>/data.pkl` pickles the state dict, or the legacy format (several pickles in
  a row). Tensor names are the pickle's string constants; `pickletools.genops` walks the opcodes without running them.

Key patterns (where each family's checkpoints come from):
- SD1.x / SD2.x (LDM layout, A1111): `model.diffusion_model.input_blocks.*`, text encoder under
  `cond_stage_model.transformer.*` (SD1, CLIP-L) or `cond_stage_model.model.*` (SD2, OpenCLIP-H).
- SDXL (SGM layout): `model.diffusion_model.label_emb.*` and `conditioner.embedders.{0,1}.*`; the refiner has only
  one embedder, an OpenCLIP-bigG (`conditioner.embedders.0.model.*`).
- Flux.1 (BFL layout, black-forest-labs/flux `src/flux/model.py`): `double_blocks.*` / `single_blocks.*`, bare in
  BFL's own transformer file, under `model.diffusion_model.` in ComfyUI's all-in-one files (which add
  `text_encoders.*` and `vae.*`); diffusers' layout uses `transformer_blocks.*` + `single_transformer_blocks.*`.
  `guidance_in.*` exists in guidance-distilled models (dev, krea) and not in schnell.
"""

from __future__ import annotations

import io
import json
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024  # the safetensors library refuses headers above 100 MB too
PICKLE_READ_LIMIT = 256 * 1024 * 1024  # a state dict's pickle (names only) is a few MB even for SDXL


class NotACheckpoint(ValueError):
    """The file is not a checkpoint lorarun can train from; the message says what it is instead."""


@dataclass(frozen=True)
class CheckpointInfo:
    family: str  # "sd15" (SD1.x and SD2.x), "sdxl", "flux"
    file_format: str  # "safetensors" or "ckpt"
    transformer_only: bool  # Flux: only the transformer (BFL/diffusers file); text encoders and VAE come from elsewhere
    sd2: bool | None  # family sd15: True for an SD2.x checkpoint (OpenCLIP text encoder); None when unknown
    guidance_embed: bool | None  # family flux: True for guidance-distilled (dev, krea), False for schnell
    tensor_count: int

    def describe(self) -> str:
        if self.family == "flux":
            kind = "Flux.1 transformer-only" if self.transformer_only else "Flux.1 full"
            flavour = {True: " (guidance-distilled: dev/krea)", False: " (schnell)", None: ""}[self.guidance_embed]
            return f"{kind} checkpoint{flavour}"
        if self.family == "sdxl":
            return "SDXL checkpoint"
        return "SD2.x checkpoint" if self.sd2 else "SD1.x checkpoint"


def probe_checkpoint(path: Path) -> CheckpointInfo:
    """Read `path`'s tensor names and recognise its family; raise `NotACheckpoint` with the reason otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise NotACheckpoint(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if len(head) < 8:
        raise NotACheckpoint(f"{path.name} is {size} bytes, far too small for a checkpoint{_text_hint(path)}")
    shapes: dict[str, list[int]] = {}  # a pickle's tensor shapes are not read: names decide there
    if head[:4] == b"PK\x03\x04":
        keys, fmt = _ckpt_zip_keys(path), "ckpt"
    elif head[:1] == b"\x80":  # pickle protocol 2+ opcode: torch's legacy (pre-1.6) save format
        keys, fmt = _ckpt_legacy_keys(path), "ckpt"
    else:
        keys, shapes = _safetensors_keys(path, head, size)
        fmt = "safetensors"
    return classify(keys, shapes, path.name, fmt)


def _safetensors_keys(path: Path, head: bytes, size: int) -> tuple[list[str], dict[str, list[int]]]:
    (length,) = struct.unpack("<Q", head)
    if length == 0 or length > SAFETENSORS_HEADER_LIMIT or length > size - 8:
        raise NotACheckpoint(
            f"{path.name} is not a safetensors file: its first 8 bytes give a header length of {length} bytes "
            f"but the file has {size}{_text_hint(path)}"
        )
    with path.open("rb") as fh:
        fh.seek(8)
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise NotACheckpoint(f"{path.name} is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise NotACheckpoint(f"{path.name} is not a safetensors file: its header is not a JSON object")
    shapes: dict[str, list[int]] = {}
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or "data_offsets" not in entry:
            raise NotACheckpoint(f"{path.name} is not a valid safetensors file: entry {name!r} has no data_offsets")
        try:
            end = max(end, int(entry["data_offsets"][1]))
            shapes[name] = [int(d) for d in entry.get("shape", [])]
        except (TypeError, ValueError, IndexError):
            raise NotACheckpoint(f"{path.name} is not a valid safetensors file: entry {name!r} is malformed") from None
    if 8 + length + end > size:
        raise NotACheckpoint(
            f"{path.name} is truncated: its header describes {8 + length + end} bytes but the file "
            f"has {size} (an interrupted download? fetch it again)"
        )
    return list(shapes), shapes


def _ckpt_zip_keys(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pkl:
                raise NotACheckpoint(f"{path.name} is a zip file but not a torch checkpoint (no data.pkl inside)")
            info = zf.getinfo(pkl[0])
            if info.file_size > PICKLE_READ_LIMIT:
                raise NotACheckpoint(f"{path.name}: its data.pkl is {info.file_size} bytes, not a state dict")
            data = zf.read(info)
    except zipfile.BadZipFile as exc:
        raise NotACheckpoint(f"{path.name} is a damaged zip/torch checkpoint ({exc}); fetch it again") from None
    return _pickle_strings(io.BytesIO(data), path.name, max_pickles=1)


def _ckpt_legacy_keys(path: Path) -> list[str]:
    with path.open("rb") as fh:
        # torch's legacy format: magic number, protocol version, sys info, then the object (torch/serialization.py
        # `_legacy_save`); read the pickles in turn and keep every string.
        return _pickle_strings(fh, path.name, max_pickles=4)


def _pickle_strings(stream, name: str, max_pickles: int) -> list[str]:
    strings: list[str] = []
    for _ in range(max_pickles):
        try:
            for opcode, arg, _pos in pickletools.genops(stream):
                if isinstance(arg, str) and opcode.name in (
                    "SHORT_BINUNICODE",
                    "BINUNICODE",
                    "BINUNICODE8",
                    "UNICODE",
                    "SHORT_BINSTRING",
                    "BINSTRING",
                    "STRING",
                ):
                    strings.append(arg)
        except (ValueError, EOFError) as exc:
            if strings:
                break
            raise NotACheckpoint(f"{name} is not a readable torch checkpoint ({exc})") from None
    return strings


def _text_hint(path: Path) -> str:
    """Say what a small non-checkpoint file looks like: an LFS pointer, an HTML error page, some text."""
    try:
        with path.open("rb") as fh:
            start = fh.read(200)
    except OSError:
        return ""
    if start.startswith(b"version https://git-lfs"):
        return " (it is a git-LFS pointer: fetch the real file with `git lfs pull` or download it again)"
    try:
        text = start.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if not text.strip() or not all(c.isprintable() or c in "\r\n\t" for c in text):
        return ""
    if "<html" in text.lower() or "<!doctype" in text.lower():
        return " (it is an HTML page, probably a login or error page saved by a download; download it again)"
    first = text.strip().splitlines()[0][:40]
    return f" (it is a text file starting {first!r}; download the real checkpoint)"


def classify(keys: list[str], shapes: dict[str, list[int]], name: str, file_format: str) -> CheckpointInfo:
    """The family from tensor names (and shapes where names are not enough). Pure; `keys` may carry noise strings
    from a pickle, so only prefixes that checkpoints use are looked at."""
    keyset = [k for k in keys if "." in k]
    if not keyset:
        raise NotACheckpoint(f"{name} holds no tensors (an empty or non-model {file_format} file)")

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keyset)

    def info(
        family: str, *, transformer_only: bool = False, sd2: bool | None = None, guidance_embed: bool | None = None
    ) -> CheckpointInfo:
        return CheckpointInfo(
            family=family,
            file_format=file_format,
            transformer_only=transformer_only,
            sd2=sd2,
            guidance_embed=guidance_embed,
            tensor_count=len(keyset),
        )

    if has("lora_unet_") or has("lora_te") or any(".lora_down." in k or ".lora_A." in k for k in keyset):
        raise NotACheckpoint(
            f"{name} is a LoRA, not a base model; give the checkpoint it was trained on as "
            f"model.base (a LoRA cannot be trained from)"
        )
    # Flux: BFL layout (bare or under ComfyUI's model.diffusion_model.) or diffusers' transformer layout.
    for prefix in ("", "model.diffusion_model."):
        if has(prefix + "double_blocks.") and has(prefix + "single_blocks."):
            full = has("vae.") or has("first_stage_model.") or has("text_encoders.")
            return info("flux", transformer_only=not full, guidance_embed=has(prefix + "guidance_in."))
    if has("single_transformer_blocks.") and has("transformer_blocks.") and has("x_embedder."):
        return info("flux", transformer_only=True, guidance_embed=has("time_text_embed.guidance_embedder."))
    if has("conditioner.embedders.") or has("model.diffusion_model.label_emb."):
        if not has("conditioner.embedders.1.") and has("conditioner.embedders.0.model."):
            raise NotACheckpoint(
                f"{name} is the SDXL refiner, not a base model; train on the SDXL base "
                f"(e.g. sd_xl_base_1.0.safetensors)"
            )
        return info("sdxl")
    if has("model.diffusion_model.input_blocks."):
        if has("cond_stage_model.model."):
            sd2: bool | None = True
        elif has("cond_stage_model.transformer."):
            sd2 = False
        else:  # UNet only: the cross-attention width says which text encoder it was trained with
            width = _context_width(shapes)
            if width == 2048:
                return info("sdxl")
            sd2 = {768: False, 1024: True}.get(width) if width else None
        return info("sd15", sd2=sd2)
    if has("down_blocks.") and has("up_blocks.") and has("conv_in."):  # a diffusers UNet saved as one file
        if has("add_embedding."):
            return info("sdxl")
        width = _context_width(shapes)
        return info("sd15", sd2={768: False, 1024: True}.get(width) if width else None)
    sample = ", ".join(sorted(keyset)[:3])
    raise NotACheckpoint(
        f"{name} has {len(keyset)} tensors but none of an SD1.x/SD2.x, SDXL or Flux model "
        f"(first names: {sample}); is it a VAE, an upscaler or another model type?"
    )


def _context_width(shapes: dict[str, list[int]]) -> int | None:
    """Input width of the first cross-attention key projection: 768 SD1, 1024 SD2, 2048 SDXL."""
    for key, shape in shapes.items():
        if key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return shape[1]
    return None
