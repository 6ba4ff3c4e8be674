"""Will the job fit the GPU? A coarse estimate, made before any weight is loaded, with advice when it does not.

Used only because `lorarun.image.memory` (the shared, torch-free estimator) may not exist yet; when it does and has
`estimate_vram_gb`, that one is preferred. Numbers: bf16 weights of the frozen parts, fp32 LoRA + AdamW states, and
activations that scale with batch × pixels, calibrated on the H100 baseline (baselines.md: SD1.5 @512 bs4 ≈ 7.0 GiB,
SDXL @1024 bs1 ≈ 14.4 GiB, bs4 ≈ 39 GiB; gradient checkpointing cuts activations ~3x).
"""
from __future__ import annotations

# (UNet params, text-encoder params, activation GiB per sample at the reference resolution, reference pixels)
_FAMILY = {
    "sd15": (0.86e9, 0.123e9, 1.3, 512 * 512),
    "sdxl": (2.57e9, 0.82e9, 8.3, 1024 * 1024),
}


def estimate_vram_gb(family: str, resolution: tuple[int, int], batch_size: int, network_dim: int,
                     gradient_checkpointing: bool, mixed_precision: str, trains_text_encoder: bool) -> float:
    unet_p, te_p, act_per_sample, ref_pixels = _FAMILY.get(family, _FAMILY["sdxl"])
    weight_bytes = 2 if mixed_precision in ("bf16", "fp16") else 4
    weights = (unet_p + (te_p if trains_text_encoder else 0)) * weight_bytes / 2**30
    lora = network_dim / 32 * (0.1 if family == "sd15" else 0.35)  # params + grads + Adam states, GiB
    pixels = resolution[0] * resolution[1]
    act = act_per_sample * batch_size * pixels / ref_pixels * (1 if weight_bytes == 2 else 2)
    if gradient_checkpointing:
        act /= 3
    return round(weights + lora + act + 1.0, 1)  # + CUDA context and allocator slack


def advice(cfg, needed: float, available: float) -> str | None:
    if needed <= available * 0.95:
        return None
    t = cfg.training
    tips = []
    if t.batch_size > 1:
        tips.append(f"lower batch_size (now {t.batch_size})")
    if not t.gradient_checkpointing:
        tips.append("enable gradient_checkpointing")
    if t.mixed_precision == "no":
        tips.append("use mixed_precision bf16")
    if t.trains_text_encoder:
        tips.append("set network_train_unet_only")
    tips.append("or rent a GPU with more memory")
    return (f"estimated {needed:.1f} GiB of GPU memory, the GPU has {available:.1f} GiB: " + ", ".join(tips))


def estimate(cfg, family: str) -> float:
    try:
        from .. import memory  # the shared estimator, if it exists by now

        fn = getattr(memory, "estimate_vram_gb")
        return float(fn(cfg))
    except Exception:  # absent, or a different signature: use ours
        t = cfg.training
        return estimate_vram_gb(family, cfg.dataset.resolution, t.batch_size, t.network_dim,
                                t.gradient_checkpointing, t.mixed_precision, t.trains_text_encoder)
