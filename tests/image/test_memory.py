"""The VRAM model against the H100 measurements it was fitted to, and the advice it gives."""

import pytest

from lorarun.image.memory import estimate_vram_gb, family_key, peak_allocated_gib, suggest_fit

# baselines.md: (family, resolution, batch, gradient checkpointing, measured peak GiB), rank 32, UNet only.
MEASURED = [
    ("sd15", (512, 512), 1, False, 3.1),
    ("sd15", (512, 512), 4, False, 7.0),
    ("sd15", (512, 512), 8, False, 12.1),
    ("sd15", (512, 512), 8, True, 9.5),
    ("sdxl", (1024, 1024), 1, False, 14.4),
    ("sdxl", (1024, 1024), 4, False, 39.4),
]


@pytest.mark.parametrize("family,reso,batch,ckpt,measured", MEASURED)
def test_peak_matches_baselines(family, reso, batch, ckpt, measured):
    predicted = peak_allocated_gib(family, reso, batch, 32, ckpt, trains_text_encoder=False)
    assert predicted == pytest.approx(measured, rel=0.05)


def test_card_needs_headroom_over_the_peak():
    peak = peak_allocated_gib("sd15", (512, 512), 2, 32, False, False)
    assert estimate_vram_gb("sd15", (512, 512), 2, 32, False, False) > peak


def test_monotone_in_what_costs_memory():
    base = dict(
        family="sdxl",
        resolution=(1024, 1024),
        batch_size=2,
        network_dim=32,
        gradient_checkpointing=False,
        trains_text_encoder=False,
    )
    v = estimate_vram_gb(**base)
    assert estimate_vram_gb(**{**base, "batch_size": 3}) > v
    assert estimate_vram_gb(**{**base, "network_dim": 128}) > v
    assert estimate_vram_gb(**{**base, "trains_text_encoder": True}) > v
    assert estimate_vram_gb(**{**base, "gradient_checkpointing": True}) < v
    assert estimate_vram_gb(**{**base, "resolution": (768, 768)}) < v
    assert estimate_vram_gb(**{**base, "mixed_precision": "no"}) > v


def test_fits_where_the_guides_say_it_does():
    # The guides' SD1.5 job (batch 2, 512, dim 32, text encoder trained) runs on 8-12 GB cards.
    assert estimate_vram_gb("sd15", (512, 512), 2, 32, False, True) < 8
    # SDXL batch 1 at 1024 fits a 24 GB card but not a 16 GB one without checkpointing.
    assert 16 < estimate_vram_gb("sdxl", (1024, 1024), 1, 32, False, False) < 24
    # SDXL batch 4 does not fit a 24 GB card (39.4 GiB measured).
    assert estimate_vram_gb("sdxl", (1024, 1024), 4, 32, False, False) > 24


def test_caching_peak_counts_when_it_dominates():
    # At a tiny batch and low rank the VAE + text encoders + UNet resident while caching set the floor.
    tiny_batch = peak_allocated_gib("sdxl", (1024, 1024), 1, 4, True, False)
    assert tiny_batch >= 4.78 + 1.52  # SDXL UNet and both text encoders in bf16


def test_tiny_family_is_small():
    assert family_key("sd15", "builtin:tiny-sd15") == "tiny"
    assert family_key("sdxl", "stabilityai/sdxl") == "sdxl"
    assert estimate_vram_gb("tiny", (64, 64), 1, 4, False, True) < 1.5


def test_unknown_family_is_an_error():
    with pytest.raises(ValueError, match="unknown model family"):
        estimate_vram_gb("sd9", (512, 512), 1, 32, False, False)


def test_suggest_fit_empty_when_it_fits():
    assert suggest_fit("sd15", (512, 512), 2, 32, False, True, available_gb=24) == ""


def test_suggest_fit_lower_batch():
    advice = suggest_fit("sdxl", (1024, 1024), 4, 32, False, False, available_gb=24)
    assert "batch_size to 1" in advice
    assert "gradient_checkpointing" in advice or "batch_size" in advice


def test_suggest_fit_checkpointing():
    need_plain = estimate_vram_gb("sd15", (512, 512), 8, 32, False, False)
    need_ckpt = estimate_vram_gb("sd15", (512, 512), 8, 32, True, False)
    advice = suggest_fit("sd15", (512, 512), 8, 32, False, False, available_gb=(need_plain + need_ckpt) / 2)
    assert "gradient_checkpointing" in advice


def test_suggest_fit_lower_resolution_or_bigger_gpu():
    advice = suggest_fit("sdxl", (1024, 1024), 1, 32, False, True, available_gb=12)
    assert "train at" in advice and "1024x1024" not in advice.split("train at")[1]
    hopeless = suggest_fit("flux", (1024, 1024), 1, 32, True, False, available_gb=6)
    assert "rent a larger GPU" in hopeless


def test_config_helpers_match_the_plain_functions():
    from lorarun.image.engine_config import DatasetConfig, EngineConfig, ModelConfig, TrainingConfig
    from lorarun.image.memory import estimate_for_config, suggest_for_config

    cfg = EngineConfig(
        job_id="j",
        output_dir="/tmp/o",
        output_name="lora",
        model=ModelConfig(family="sdxl", base="stabilityai/sdxl"),
        dataset=DatasetConfig(resolution=(1024, 1024)),
        training=TrainingConfig(batch_size=4, network_train_unet_only=True),
    )
    assert estimate_for_config(cfg) == estimate_vram_gb("sdxl", (1024, 1024), 4, 32, False, False)
    assert "batch_size" in suggest_for_config(cfg, available_gb=24)
    assert suggest_for_config(cfg, available_gb=80) == ""
    tiny = EngineConfig(
        job_id="j", output_dir="/tmp/o", output_name="lora", model=ModelConfig(family="sd15", base="builtin:tiny-sd15")
    )
    assert estimate_for_config(tiny) < 1.5


def test_flux_figures_per_quantisation():
    """The figures Flux trainers' users report (rank 16, all blocks, 512-1024, checkpointing): ~30 GB bf16,
    ~18 GB int8, ~9 GB NF4."""
    from lorarun.image.memory import FLUX_QUANTIZATION, ram_needed_gb

    for quant, reported in (("bf16", 30), ("int8", 18), ("nf4", 9)):
        assert FLUX_QUANTIZATION[quant].reported_gb == reported
        for side in (512, 768, 1024):
            need = estimate_vram_gb("flux", (side, side), 1, 16, True, False, quantization=quant)
            assert abs(need - reported) <= 0.15 * reported, (quant, side, need)
    at_1024 = [
        estimate_vram_gb("flux", (1024, 1024), 1, 16, True, False, quantization=q) for q in ("bf16", "int8", "nf4")
    ]
    assert at_1024 == sorted(at_1024, reverse=True)
    assert estimate_vram_gb("flux", (1024, 1024), 1, 16, False, False) > 40  # no checkpointing: an 80 GB card
    assert ram_needed_gb("flux", "nf4") > ram_needed_gb("flux", "bf16") > ram_needed_gb("sdxl")


def test_flux_advice_names_the_quantisation_and_the_config_helpers_read_it():
    from lorarun.image.engine_config import DatasetConfig, EngineConfig, ModelConfig
    from lorarun.image.flux_config import FluxConfig
    from lorarun.image.memory import estimate_for_config

    advice = suggest_fit("flux", (1024, 1024), 1, 16, True, False, available_gb=24)
    assert "flux.quantization: int8" in advice
    assert "NF4" in suggest_fit("flux", (1024, 1024), 1, 16, True, False, available_gb=6)
    cfg = EngineConfig(
        job_id="j",
        output_dir="/tmp/o",
        output_name="lora",
        model=ModelConfig(family="flux", base="black-forest-labs/FLUX.1-dev"),
        dataset=DatasetConfig(resolution=(1024, 1024)),
        flux=FluxConfig(quantization="nf4"),
    )
    # Flux never trains its text encoders, whatever text_encoder_lr says
    assert estimate_for_config(cfg) == estimate_vram_gb("flux", (1024, 1024), 1, 32, False, False, quantization="nf4")
