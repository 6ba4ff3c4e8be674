"""How much GPU memory a LoRA training run needs, without torch.

Two users: the controller refuses offers whose GPU would run out of memory (an OOM after paying for the hour is
one of the pains lorarun exists to remove), and the engine checks the GPU it landed on before loading anything.

The model is linear in the batch, which is what the measurements show (baselines.md, H100, peak allocated GiB):

    peak = resident(family, precision) + lora_state(rank) + per_sample(family) × batch × megapixels × ckpt_factor

Constants are fitted to baselines.md (SD1.5@512: bs1 3.1, bs4 7.0, bs8 12.1, bs8+checkpointing 9.5;
SDXL@1024: bs1 14.4, bs4 39.4, all at LoRA rank 32 with cached latents and text embeddings). Activations are
taken as linear in pixels: SDPA keeps attention memory linear in tokens, and the UNet's other activations are
linear in pixels by construction. Flux has no measurement yet: its constants are arithmetic from parameter counts
(engine.md §6) and say so.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class FamilyMemory:
    resident_gib: float  # everything that does not scale with the batch, at LoRA rank 32, bf16 base
    per_megapixel_gib: float  # activations per sample per megapixel of training resolution
    lora_params_per_rank: float  # LoRA parameters per unit of rank on the trained modules (UNet/transformer)
    base_weights_gib: float  # bf16 weights of the denoiser (doubles in fp32)
    text_encoders_gib: float  # bf16 weights of the text encoder(s); resident only while they train or cache
    te_lora_params_per_rank: float
    vae_encode_gib_per_megapixel: float  # VAE encoder activations during latent caching (batch 1, no grad)
    source: str


# Fitted so that the formula reproduces baselines.md within a few percent (see tests/unit/test_memory.py).
FAMILIES: dict[str, FamilyMemory] = {
    "sd15": FamilyMemory(
        # (12.1 - 3.1) / 7 samples = 1.286 GiB per 512² sample (0.262 MP) → 4.905 GiB/MP;
        # intercept 3.1 - 1.286 = 1.81.
        resident_gib=1.81, per_megapixel_gib=4.905,
        # A kohya SD1.5 LoRA at dim 128 is ~151 MB in fp16: ~0.59 M params per rank, ~0.09 M of them in the TE.
        lora_params_per_rank=0.5e6,
        base_weights_gib=859_520_964 * 2 / GIB,
        text_encoders_gib=123_060_480 * 2 / GIB, te_lora_params_per_rank=0.09e6,
        vae_encode_gib_per_megapixel=2.0,
        source="fitted to baselines.md (H100, SD1.5@512, bs 1/4/8, rank 32)",
    ),
    "sdxl": FamilyMemory(
        # (39.4 - 14.4) / 3 samples = 8.33 GiB per 1024² sample (1.049 MP) → 7.95 GiB/MP;
        # intercept 14.4 - 8.33 = 6.07.
        resident_gib=6.07, per_megapixel_gib=7.95,
        lora_params_per_rank=2.9e6,  # a kohya SDXL LoRA at dim 32 is ~200 MB in fp16 with both TEs
        base_weights_gib=2_567_463_684 * 2 / GIB,
        text_encoders_gib=817_720_320 * 2 / GIB, te_lora_params_per_rank=0.5e6,
        vae_encode_gib_per_megapixel=3.5,
        source="fitted to baselines.md (H100, SDXL@1024, bs 1/4, rank 32)",
    ),
    "flux": FamilyMemory(
        # Not measured: 11.9 B params in bf16 = 22.2 GiB resident; activations assumed 1.5× SDXL per megapixel
        # (a transformer over 4096 image tokens at 1024²). Errs high rather than letting an offer OOM.
        resident_gib=23.5, per_megapixel_gib=12.5,
        lora_params_per_rank=4.5e6,
        base_weights_gib=11_901_408_320 * 2 / GIB,
        text_encoders_gib=(4_762_310_656 + 123_060_480) * 2 / GIB, te_lora_params_per_rank=0.0,
        vae_encode_gib_per_megapixel=3.5,
        source="arithmetic from parameter counts (engine.md §6); not measured",
    ),
    "tiny": FamilyMemory(
        # The built-in test models (diffusers' tiny configs): a few MB of weights; everything is noise here.
        resident_gib=0.15, per_megapixel_gib=0.5, lora_params_per_rank=2e3,
        base_weights_gib=0.01, text_encoders_gib=0.01, te_lora_params_per_rank=1e3,
        vae_encode_gib_per_megapixel=0.2,
        source="built-in tiny model: a few MB",
    ),
}
FIT_RANK = 32  # the rank at which `resident_gib` was measured
# fp32 LoRA weight + gradient + two AdamW moments. 8-bit AdamW needs less; the estimate keeps the larger figure.
LORA_BYTES_PER_PARAM = 16
# Measured: SD1.5@512 bs8 is 12.1 GiB plain, 9.5 with checkpointing → activations × (9.5-1.81)/(12.1-1.81).
CHECKPOINTING_FACTOR = 0.75
# What the card must have beyond torch's peak allocation: allocator fragmentation and the CUDA context/cuBLAS
# workspaces that `max_memory_allocated` does not count.
FRAGMENTATION = 1.10
CUDA_CONTEXT_GIB = 0.6
TE_ACTIVATIONS_GIB_PER_SAMPLE = {"sd15": 0.05, "sdxl": 0.15, "flux": 0.0, "tiny": 0.001}


def family_key(family: str, base: str = "") -> str:
    """The memory/speed family of a model: the built-in tiny models are their own family."""
    return "tiny" if base.startswith("builtin:tiny") else family


def peak_allocated_gib(family: str, resolution: tuple[int, int], batch_size: int, network_dim: int,
                       gradient_checkpointing: bool, trains_text_encoder: bool,
                       mixed_precision: str = "bf16") -> float:
    """Predicted `torch.cuda.max_memory_allocated()` of a training run, in GiB (what baselines.md reports)."""
    f = _family(family)
    megapixels = resolution[0] * resolution[1] / 1e6
    fp32 = mixed_precision == "no"  # no autocast: weights and activations in fp32, twice the bytes
    resident = f.resident_gib + (f.base_weights_gib if fp32 else 0.0)
    resident += (network_dim - FIT_RANK) * f.lora_params_per_rank * LORA_BYTES_PER_PARAM / GIB
    activations = f.per_megapixel_gib * megapixels * batch_size
    if gradient_checkpointing:
        activations *= CHECKPOINTING_FACTOR
    if fp32:
        activations *= 2
    if trains_text_encoder:
        # Training the text encoder(s) keeps them resident and un-cached, with their own LoRA state.
        resident += f.text_encoders_gib * (2 if fp32 else 1)
        resident += network_dim * f.te_lora_params_per_rank * LORA_BYTES_PER_PARAM / GIB
        activations += TE_ACTIVATIONS_GIB_PER_SAMPLE.get(family, 0.1) * batch_size
    training_peak = resident + activations
    # Before training, latents and text embeddings are cached with the VAE and text encoders loaded beside the
    # denoiser; at high resolution the VAE encoder's activations can make this the peak.
    caching_peak = (f.base_weights_gib + f.text_encoders_gib + 0.16
                    + f.vae_encode_gib_per_megapixel * megapixels)
    return max(training_peak, caching_peak)


def estimate_vram_gb(family: str, resolution: tuple[int, int], batch_size: int, network_dim: int,
                     gradient_checkpointing: bool, trains_text_encoder: bool,
                     mixed_precision: str = "bf16") -> float:
    """GB of GPU memory a card must have for this run (the number offers are compared with)."""
    peak = peak_allocated_gib(family, resolution, batch_size, network_dim, gradient_checkpointing,
                              trains_text_encoder, mixed_precision)
    # Offers list VRAM in roughly GiB (Vast's MiB/1000: a 4090 shows 24.6; RunPod says "24 GB" for 24 GiB),
    # so the GiB-based need is compared with them directly.
    return round(peak * FRAGMENTATION + CUDA_CONTEXT_GIB, 2)


def suggest_fit(family: str, resolution: tuple[int, int], batch_size: int, network_dim: int,
                gradient_checkpointing: bool, trains_text_encoder: bool, available_gb: float,
                mixed_precision: str = "bf16") -> str:
    """What to change so the run fits in `available_gb`, cheapest change in quality first; "" when it fits."""
    args = dict(family=family, resolution=resolution, network_dim=network_dim, mixed_precision=mixed_precision)

    def need(batch: int, ckpt: bool, te: bool, reso: tuple[int, int] = resolution, mp: str = mixed_precision):
        return estimate_vram_gb(**{**args, "resolution": reso, "mixed_precision": mp}, batch_size=batch,
                                gradient_checkpointing=ckpt, trains_text_encoder=te)

    needed = need(batch_size, gradient_checkpointing, trains_text_encoder)
    if needed <= available_gb:
        return ""
    head = f"needs ~{needed:.1f} GB of GPU memory, {available_gb:.1f} GB available"
    ideas: list[str] = []
    if mixed_precision == "no" and need(batch_size, gradient_checkpointing, trains_text_encoder, mp="bf16") \
            <= available_gb:
        ideas.append("use mixed_precision: bf16")
    if not gradient_checkpointing and need(batch_size, True, trains_text_encoder) <= available_gb:
        ideas.append("turn on gradient_checkpointing (slower steps, same result)")
    fitting_batch = next((b for b in range(batch_size - 1, 0, -1)
                          if need(b, gradient_checkpointing, trains_text_encoder) <= available_gb), None)
    if fitting_batch:
        ideas.append(f"lower batch_size to {fitting_batch}")
    elif not gradient_checkpointing:
        fitting_batch = next((b for b in range(batch_size, 0, -1)
                              if need(b, True, trains_text_encoder) <= available_gb), None)
        if fitting_batch and fitting_batch != batch_size:
            ideas.append(f"turn on gradient_checkpointing and lower batch_size to {fitting_batch}")
    if trains_text_encoder and need(batch_size, gradient_checkpointing, False) <= available_gb:
        ideas.append("train the UNet only (network_train_unet_only: true)")
    if not ideas:
        for side in (768, 640, 512, 384, 256):
            smaller = _scaled_resolution(resolution, side)
            if smaller != resolution and need(1, True, False, smaller) <= available_gb:
                ideas.append(f"train at {smaller[0]}x{smaller[1]} with batch_size 1, gradient_checkpointing "
                             f"and the UNet only")
                break
    if not ideas:
        minimum = need(1, True, False)
        return f"{head}; even batch 1 with gradient checkpointing needs ~{minimum:.1f} GB: rent a larger GPU"
    return f"{head}; to fit: " + ", or ".join(ideas)


def estimate_for_config(cfg) -> float:
    """`estimate_vram_gb` for an `EngineConfig` (or a `JobSpec`: anything with .model, .dataset, .training)."""
    t = cfg.training
    return estimate_vram_gb(family_key(cfg.model.family, cfg.model.base), tuple(cfg.dataset.resolution),
                            t.batch_size, t.network_dim, t.gradient_checkpointing, t.trains_text_encoder,
                            t.mixed_precision)


def suggest_for_config(cfg, available_gb: float) -> str:
    """`suggest_fit` for an `EngineConfig` or `JobSpec`; "" when the run fits in `available_gb`."""
    t = cfg.training
    return suggest_fit(family_key(cfg.model.family, cfg.model.base), tuple(cfg.dataset.resolution), t.batch_size,
                       t.network_dim, t.gradient_checkpointing, t.trains_text_encoder, available_gb,
                       t.mixed_precision)


def _scaled_resolution(resolution: tuple[int, int], longest: int) -> tuple[int, int]:
    w, h = resolution
    if max(w, h) <= longest:
        return resolution
    scale = longest / max(w, h)
    return (max(64, int(w * scale) // 64 * 64), max(64, int(h * scale) // 64 * 64))


def _family(family: str) -> FamilyMemory:
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}") from None
