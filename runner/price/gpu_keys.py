"""One canonical key per GPU card, so that measured and shipped calibration rows meet whatever the provider calls it."""

from __future__ import annotations

import re

# Providers spell the same card differently ("RTX 4090", "NVIDIA GeForce RTX 4090", "H100 SXM", "NVIDIA H100 80GB
# HBM3"); one canonical key per card makes measured and shipped rows meet. Order matters (l40s before l40).
_GPU_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\bcpu\b", "cpu"),  # "CPU (8 cores)" (local), "none (CPU only)" (ssh)
    (r"\bh200\b", "h200"),
    (r"\bh100\b.*\bpcie\b", "h100 pcie"),
    (r"\bh100\b.*\bnvl\b", "h100 nvl"),
    (r"\bh100\b", "h100 sxm"),
    (r"\ba100\b", "a100"),
    (r"\bl40s\b", "l40s"),
    (r"\bl40\b", "l40"),
    (r"\b6000 ada\b", "rtx 6000 ada"),
    (r"\ba6000\b", "rtx a6000"),
    (r"\ba5000\b", "a5000"),
    (r"\ba4000\b", "a4000"),
    (r"\ba40\b", "a40"),
    (r"\ba10g?\b", "a10"),
    (r"\bl4\b", "l4"),
    (r"\b5090\b", "rtx 5090"),
    (r"\b4090\b", "rtx 4090"),
    (r"\b4080\b", "rtx 4080"),
    (r"\b4070 ti\b", "rtx 4070 ti"),
    (r"\b3090 ti\b", "rtx 3090 ti"),
    (r"\b3090\b", "rtx 3090"),
    (r"\b3080\b", "rtx 3080"),
    (r"\b3060\b", "rtx 3060"),
    (r"\b2080 ti\b", "rtx 2080 ti"),
    (r"\bv100\b", "v100"),
    (r"\bt4\b", "t4"),
    (r"\bgtx\b", "gtx"),
)


def gpu_key(name: str) -> str:
    """Canonical key of a GPU name; an empty name or a CPU description is "cpu"."""
    text = name.lower().replace("_", " ").replace("-", " ")
    text = re.sub(r"\b(nvidia|geforce|tesla)\b", " ", text)
    text = re.sub(r"\b\d+\s*gb\b", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return "cpu"
    for pattern, key in _GPU_PATTERNS:
        if re.search(pattern, text):
            return key
    return text
