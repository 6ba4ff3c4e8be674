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


# Fitted so that the formula reproduces baselines.md within a few percent (see tests/image/test_memory.py).
FAMILIES: dict[str, FamilyMemory] = {
    "sd15": FamilyMemory(
        # (12.1 - 3.1) / 7 samples = 1.286 GiB per 512² sample (0.262 MP) → 4.905 GiB/MP;
        # intercept 3.1 - 1.286 = 1.81.
        resident_gib=1.81,
        per_megapixel_gib=4.905,
        # A kohya SD1.5 LoRA at dim 128 is ~151 MB in fp16: ~0.59 M params per rank, ~0.09 M of them in the TE.
        lora_params_per_rank=0.5e6,
        base_weights_gib=859_520_964 * 2 / GIB,
        text_encoders_gib=123_060_480 * 2 / GIB,
        te_lora_params_per_rank=0.09e6,
        vae_encode_gib_per_megapixel=2.0,
        source="fitted to baselines.md (H100, SD1.5@512, bs 1/4/8, rank 32)",
    ),
    "sdxl": FamilyMemory(
        # (39.4 - 14.4) / 3 samples = 8.33 GiB per 1024² sample (1.049 MP) → 7.95 GiB/MP;
        # intercept 14.4 - 8.33 = 6.07.
        resident_gib=6.07,
        per_megapixel_gib=7.95,
        lora_params_per_rank=2.9e6,  # a kohya SDXL LoRA at dim 32 is ~200 MB in fp16 with both TEs
        base_weights_gib=2_567_463_684 * 2 / GIB,
        text_encoders_gib=817_720_320 * 2 / GIB,
        te_lora_params_per_rank=0.5e6,
        vae_encode_gib_per_megapixel=3.5,
        source="fitted to baselines.md (H100, SDXL@1024, bs 1/4, rank 32)",
    ),
    "flux": FamilyMemory(
        # Not measured here. resident_gib is the bf16 figure below (FLUX_QUANTIZATION); activations without
        # checkpointing are arithmetic (57 blocks over 4096 + 512 tokens of width 3072), with checkpointing only
        # the block inputs and one block's working set stay (FLUX_CHECKPOINTING_FACTOR).
        resident_gib=23.5,
        per_megapixel_gib=24.0,
        lora_params_per_rank=5_369_856,  # every linear of the 19 double + 38 single blocks (target `all`), counted
        base_weights_gib=11_901_408_320 * 2 / GIB,
        text_encoders_gib=(4_762_310_656 + 123_060_480) * 2 / GIB,
        te_lora_params_per_rank=0.0,
        vae_encode_gib_per_megapixel=3.5,
        source="figures users report for each quantisation (FLUX_QUANTIZATION); not measured here",
    ),
    "tiny": FamilyMemory(
        # The built-in test models (diffusers' tiny configs): a few MB of weights; everything is noise here.
        resident_gib=0.15,
        per_megapixel_gib=0.5,
        lora_params_per_rank=2e3,
        base_weights_gib=0.01,
        text_encoders_gib=0.01,
        te_lora_params_per_rank=1e3,
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


@dataclass(frozen=True)
class FluxQuantization:
    reported_gb: float  # what users report a card needs: rank-16 LoRA on all blocks, 512-1024, checkpointing
    t5_gib: float  # T5-XXL for caching, loaded in the same form
    system_ram_gb: float  # host memory the load needs (see ram_needed_gb)


# Flux.1's quantisations. reported_gb are the figures users of the Flux trainers report (about 30 GB unquantised,
# 18 GB int8, 9 GB NF4; issue #14); the per-quantisation resident memory is fitted so that the formula gives them
# at the middle of that range (768², batch 1, rank 16, checkpointing). Weights alone: 11.9 B params × 2 bytes
# (bf16, 22.2 GiB), × ~1 byte + row scales (int8, ~11.6), × ~0.5 byte + block absmax (NF4, ~6.3): the NF4 report
# implies lighter optimizer state than this formula's fp32 AdamW, so the fit, not the arithmetic, decides.
FLUX_QUANTIZATION: dict[str, FluxQuantization] = {
    "bf16": FluxQuantization(reported_gb=30.0, t5_gib=8.9, system_ram_gb=36.0),
    "int8": FluxQuantization(reported_gb=18.0, t5_gib=4.6, system_ram_gb=48.0),
    "nf4": FluxQuantization(reported_gb=9.0, t5_gib=2.7, system_ram_gb=44.0),
}


@dataclass(frozen=True)
class FluxFit:
    """The run the Flux reports describe: the point the resident memory is fitted at."""

    resolution: tuple[int, int] = (768, 768)
    batch_size: int = 1
    network_dim: int = 16
    gradient_checkpointing: bool = True


FLUX_FIT = FluxFit()
# With checkpointing Flux keeps the 57 block inputs (4608 tokens × 3072 × bf16 at 1024² ≈ 1.6 GB) and one block's
# recomputed activations: about a tenth of the full activations.
FLUX_CHECKPOINTING_FACTOR = 0.1
QUANTIZATIONS = tuple(FLUX_QUANTIZATION)


def family_key(family: str, base: str = "") -> str:
    """The memory/speed family of a model: the built-in tiny models are their own family."""
    return "tiny" if base.startswith("builtin:tiny") else family


def peak_allocated_gib(
    family: str,
    resolution: tuple[int, int],
    batch_size: int,
    network_dim: int,
    gradient_checkpointing: bool,
    trains_text_encoder: bool,
    mixed_precision: str = "bf16",
    quantization: str = "bf16",
) -> float:
    """Predicted `torch.cuda.max_memory_allocated()` of a training run, in GiB (what baselines.md reports).
    `quantization` (bf16 | int8 | nf4) applies to Flux's base weights only."""
    if family == "flux":
        return _flux_peak_gib(resolution, batch_size, network_dim, gradient_checkpointing, quantization)
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
    caching_peak = f.base_weights_gib + f.text_encoders_gib + 0.16 + f.vae_encode_gib_per_megapixel * megapixels
    return max(training_peak, caching_peak)


def _flux_activations_gib(resolution: tuple[int, int], batch_size: int, ckpt: bool) -> float:
    megapixels = resolution[0] * resolution[1] / 1e6
    return FAMILIES["flux"].per_megapixel_gib * megapixels * batch_size * (FLUX_CHECKPOINTING_FACTOR if ckpt else 1)


def _flux_lora_gib(network_dim: int) -> float:
    return network_dim * FAMILIES["flux"].lora_params_per_rank * LORA_BYTES_PER_PARAM / GIB


def flux_resident_gib(quantization: str) -> float:
    """Everything but activations and LoRA state, fitted so the reported figure comes out at FLUX_FIT."""
    q = _quant(quantization)
    fit = FLUX_FIT
    peak = (q.reported_gb - CUDA_CONTEXT_GIB) / FRAGMENTATION
    return (
        peak
        - _flux_activations_gib(fit.resolution, fit.batch_size, fit.gradient_checkpointing)
        - _flux_lora_gib(fit.network_dim)
    )


def _flux_peak_gib(resolution, batch_size, network_dim, ckpt, quantization) -> float:
    q = _quant(quantization)
    training = (
        flux_resident_gib(quantization)
        + _flux_lora_gib(network_dim)
        + _flux_activations_gib(resolution, batch_size, ckpt)
    )
    # The Flux trainer caches with the text encoders alone on the GPU, then the autoencoder alone (engine/flux).
    megapixels = resolution[0] * resolution[1] / 1e6
    caching = max(q.t5_gib + 0.25, 0.16 + FAMILIES["flux"].vae_encode_gib_per_megapixel * megapixels)
    return max(training, caching)


def _quant(quantization: str) -> FluxQuantization:
    try:
        return FLUX_QUANTIZATION[quantization]
    except KeyError:
        raise ValueError(f"unknown quantization {quantization!r}; known: {', '.join(FLUX_QUANTIZATION)}") from None


def ram_needed_gb(family: str, quantization: str = "bf16") -> float:
    """System memory (GB) the machine needs to load the base model. Flux passes the whole bf16 transformer
    (22 GiB) and T5-XXL (9 GiB) through host memory (a single-file checkpoint is read whole), and quantising
    holds the quantised copy beside the layer being converted; SD models need far less."""
    if family == "flux":
        return _quant(quantization).system_ram_gb
    return {"sdxl": 16.0, "sd15": 8.0}.get(family, 0.0)


def estimate_vram_gb(
    family: str,
    resolution: tuple[int, int],
    batch_size: int,
    network_dim: int,
    gradient_checkpointing: bool,
    trains_text_encoder: bool,
    mixed_precision: str = "bf16",
    quantization: str = "bf16",
) -> float:
    """GB of GPU memory a card must have for this run (the number offers are compared with)."""
    peak = peak_allocated_gib(
        family,
        resolution,
        batch_size,
        network_dim,
        gradient_checkpointing,
        trains_text_encoder,
        mixed_precision,
        quantization,
    )
    # Offers list VRAM in roughly GiB (Vast's MiB/1000: a 4090 shows 24.6; RunPod says "24 GB" for 24 GiB),
    # so the GiB-based need is compared with them directly.
    return round(peak * FRAGMENTATION + CUDA_CONTEXT_GIB, 2)


def suggest_fit(
    family: str,
    resolution: tuple[int, int],
    batch_size: int,
    network_dim: int,
    gradient_checkpointing: bool,
    trains_text_encoder: bool,
    available_gb: float,
    mixed_precision: str = "bf16",
    quantization: str = "bf16",
) -> str:
    """What to change so the run fits in `available_gb`, cheapest change in quality first; "" when it fits."""

    def need(
        batch: int,
        ckpt: bool,
        te: bool,
        reso: tuple[int, int] = resolution,
        mp: str = mixed_precision,
        quant: str = quantization,
    ) -> float:
        return estimate_vram_gb(
            family,
            reso,
            batch_size=batch,
            network_dim=network_dim,
            gradient_checkpointing=ckpt,
            trains_text_encoder=te,
            mixed_precision=mp,
            quantization=quant,
        )

    needed = need(batch_size, gradient_checkpointing, trains_text_encoder)
    if needed <= available_gb:
        return ""
    head = f"needs ~{needed:.1f} GB of GPU memory, {available_gb:.1f} GB available"
    ideas: list[str] = []
    if (
        mixed_precision == "no"
        and need(batch_size, gradient_checkpointing, trains_text_encoder, mp="bf16") <= available_gb
    ):
        ideas.append("use mixed_precision: bf16")
    if not gradient_checkpointing and need(batch_size, True, trains_text_encoder) <= available_gb:
        ideas.append("turn on gradient_checkpointing (slower steps, same result)")
    fitting_batch = next(
        (
            b
            for b in range(batch_size - 1, 0, -1)
            if need(b, gradient_checkpointing, trains_text_encoder) <= available_gb
        ),
        None,
    )
    if fitting_batch:
        ideas.append(f"lower batch_size to {fitting_batch}")
    elif not gradient_checkpointing:
        fitting_batch = next(
            (b for b in range(batch_size, 0, -1) if need(b, True, trains_text_encoder) <= available_gb), None
        )
        if fitting_batch and fitting_batch != batch_size:
            ideas.append(f"turn on gradient_checkpointing and lower batch_size to {fitting_batch}")
    if trains_text_encoder and need(batch_size, gradient_checkpointing, False) <= available_gb:
        ideas.append("train the UNet only (network_train_unet_only: true)")
    if family == "flux":
        lighter = [
            q
            for q in QUANTIZATIONS[QUANTIZATIONS.index(quantization) + 1 :]
            if need(batch_size, gradient_checkpointing, False, quant=q) <= available_gb
        ]
        if lighter:
            ideas.append(f"quantise the base (flux.quantization: {lighter[0]})")
    if not ideas:
        for side in (768, 640, 512, 384, 256):
            smaller = _scaled_resolution(resolution, side)
            if smaller != resolution and need(1, True, False, smaller) <= available_gb:
                ideas.append(
                    f"train at {smaller[0]}x{smaller[1]} with batch_size 1, gradient_checkpointing and the UNet only"
                )
                break
    if not ideas:
        if family == "flux":
            minimum = need(1, True, False, quant=QUANTIZATIONS[-1])
            return f"{head}; even NF4 at batch 1 with gradient checkpointing needs ~{minimum:.1f} GB: rent a larger GPU"
        minimum = need(1, True, False)
        return f"{head}; even batch 1 with gradient checkpointing needs ~{minimum:.1f} GB: rent a larger GPU"
    return f"{head}; to fit: " + ", or ".join(ideas)


def estimate_for_config(cfg) -> float:
    """`estimate_vram_gb` for an `EngineConfig` (or a `JobSpec`: anything with .model, .dataset, .training)."""
    t = cfg.training
    family, te, quant = config_memory_keys(cfg)
    return estimate_vram_gb(
        family,
        tuple(cfg.dataset.resolution),
        t.batch_size,
        t.network_dim,
        t.gradient_checkpointing,
        te,
        t.mixed_precision,
        quant,
    )


def config_memory_keys(cfg) -> tuple[str, bool, str]:
    """(memory family, whether text encoders train, quantization) of an EngineConfig / JobSpec. Flux never trains
    its text encoders here; its quantization is `flux.quantization`."""
    family = family_key(cfg.model.family, cfg.model.base)
    if cfg.model.family == "flux":
        flux = getattr(cfg, "flux", None)
        return family, False, getattr(flux, "quantization", "bf16")
    return family, cfg.training.trains_text_encoder, "bf16"


def suggest_for_config(cfg, available_gb: float) -> str:
    """`suggest_fit` for an `EngineConfig` or `JobSpec`; "" when the run fits in `available_gb`."""
    t = cfg.training
    family, te, quant = config_memory_keys(cfg)
    return suggest_fit(
        family,
        tuple(cfg.dataset.resolution),
        t.batch_size,
        t.network_dim,
        t.gradient_checkpointing,
        te,
        available_gb,
        t.mixed_precision,
        quant,
    )


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
