"""Flux.1 LoRA training on the tiny Flux-shaped model (CPU), and the saved names against ComfyUI's and diffusers'
Flux key maps — on the tiny model, on real-width layers, and on the real FLUX.1 architecture on the meta device."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from lorarun.image.engine.flux.lora import add_flux_lora, kohya_flux_state_dict, out_features  # noqa: E402
from lorarun.image.engine.flux.step import auto_shift_mu, sample_t  # noqa: E402
from lorarun.image.engine.lora import lora_state_dict  # noqa: E402

from .engine_helpers import engine_config, read_events, run_engine, write_config  # noqa: E402
from .flux_keymap import bfl_shapes  # noqa: E402

# FLUX.1-dev transformer/config.json (engine.md Appendix A)
FLUX1 = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)


def _check_comfy_names(kohya: dict, transformer) -> None:
    """Every module maps to a BFL weight in ComfyUI's map, with up @ down shaped like that weight."""
    shapes = bfl_shapes(transformer)
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in kohya}
    for name in modules:
        assert name in shapes, f"{name} is not a module ComfyUI's Flux key map knows"
        down, up = kohya[f"{name}.lora_down.weight"], kohya[f"{name}.lora_up.weight"]
        assert (up.shape[0], down.shape[1]) == shapes[name] and up.shape[1] == down.shape[0]
        assert kohya[f"{name}.alpha"].ndim == 0


def _delta(a, b, scale=1.0):
    return (b.float() @ a.float()) * scale


@pytest.fixture(scope="module")
def flux_run(tmp_path_factory, dataset, asset_cache):
    tmp = tmp_path_factory.mktemp("flux")
    cfg = engine_config(
        tmp,
        dataset,
        "flux",
        training={"network_dim": 4, "network_alpha": 2},
        sample={"prompts": ["a red circle"], "grid_strengths": [0.0, 1.0], "grid_seeds": [1]},
        flux={
            "save_diffusers_format": True,
            "apply_t5_attn_mask": True,
            "t5xxl_max_token_length": 16,
            "guidance_scale": 1.0,
        },
    )
    result = run_engine(write_config(tmp, cfg))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "out", read_events(tmp / "out")


def test_flux_restart_after_finish_resumes_its_saved_state(flux_run):
    """The resume state a Flux run saves (the transformer's LoRA, optimizer, RNG) is read back by a restart, which
    then sees the run is complete and trains nothing."""
    out, events = flux_run
    before = len(events)
    result = run_engine(out.parent / "engine_config.json")
    assert result.returncode == 0, result.stderr[-3000:]
    after = read_events(out)[before:]
    assert not [e for e in after if e["event"] == "step"]
    assert after[-1]["event"] == "finished" and after[-1]["resumed"] is True


def test_tiny_flux_trains_and_saves_comfyui_names(flux_run):
    out, events = flux_run
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "finished" and "grid" in kinds
    assert [e["path"] for e in events if e["event"] == "sample"] == ["samples/tiny_e000002_00.png"]
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 6 and all(0 < e["loss"] < 100 for e in steps)
    flux = next(e for e in events if e["event"] == "flux")
    assert flux["timestep_sampling"] == "shift" and flux["t5_tokens"] == 16 and flux["network_target"] == "all"

    kohya = load_file(str(out / "tiny.safetensors"))
    names = {k.split(".")[0] for k in kohya}
    assert all(n.startswith(("lora_unet_double_blocks_", "lora_unet_single_blocks_")) for n in names)
    # 2 double blocks × 10 BFL modules + 2 single blocks × 3: all of `all`'s layers, none dropped
    assert len(names) == 2 * 10 + 2 * 3
    assert kohya["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape[0] == 3 * 4  # q, k, v stacked
    assert float(kohya["lora_unet_double_blocks_0_img_attn_qkv.alpha"]) == 3 * 2  # alpha/rank kept at 2/4
    from lorarun.image.engine.flux.tiny import build_tiny_flux

    _check_comfy_names(kohya, build_tiny_flux("dev").transformer)
    with safe_open(str(out / "tiny.safetensors"), "pt") as f:
        md = f.metadata()
    assert md["ss_base_model_version"] == "flux1" and md["ss_network_module"] == "networks.lora_flux"
    assert md["modelspec.architecture"] == "flux-1-dev/lora" and md["ss_guidance_scale"] == "1.0"
    assert md["ss_network_dim"] == "4" and md["ss_network_alpha"] == "2" and md["sshs_model_hash"]


def test_tiny_flux_reports_caching_progress_like_sd(flux_run):
    """Flux caches through the SD trainer's steps (issue 22): the same `progress` events for captions and latents."""
    _, events = flux_run
    for phase in ("caching_text", "caching_latents"):
        seen = [e for e in events if e["event"] == "progress" and e["phase"] == phase]
        assert seen and seen[-1]["done"] == seen[-1]["total"] > 0, phase


def test_tiny_flux_files_load_into_diffusers_flux_pipeline(flux_run):
    out, _ = flux_run
    from lorarun.image.engine.flux.step import latent_image_ids
    from lorarun.image.engine.flux.tiny import build_tiny_flux

    kohya = load_file(str(out / "tiny.safetensors"))
    peft_file = load_file(str(out / "tiny.diffusers.safetensors"))

    def pipeline():
        from diffusers import FluxPipeline

        p = build_tiny_flux("dev")
        return FluxPipeline(
            scheduler=p.scheduler,
            vae=p.vae,
            text_encoder=p.text_encoders[0],
            tokenizer=p.tokenizers[0],
            text_encoder_2=p.text_encoders[1],
            tokenizer_2=p.tokenizers[1],
            transformer=p.transformer,
        )

    def forward(transformer):
        g = torch.Generator().manual_seed(0)
        x, ctx, pooled = (
            torch.randn(1, 16, 64, generator=g),
            torch.randn(1, 8, 32, generator=g),
            torch.randn(1, 32, generator=g),
        )
        with torch.no_grad():
            return transformer(
                hidden_states=x,
                encoder_hidden_states=ctx,
                pooled_projections=pooled,
                timestep=torch.tensor([0.5]),
                img_ids=latent_image_ids(8, 8, "cpu"),
                txt_ids=torch.zeros(8, 3),
                guidance=torch.tensor([1.0]),
                return_dict=False,
            )[0]

    # the diffusers layout: loaded by FluxPipeline and applied (the output moves)
    pipe = pipeline()
    base = forward(pipe.transformer)
    pipe.load_lora_weights(str(out / "tiny.diffusers.safetensors"))
    assert not torch.allclose(forward(pipe.transformer), base)
    # the kohya layout: diffusers' kohya-Flux converter reads our double blocks back to the same weights. (Its
    # single-block split is hard-wired to FLUX.1's 3072/12288 widths: the real-width test covers those.)
    pipe = pipeline()
    doubles = {k: v for k, v in kohya.items() if k.startswith("lora_unet_double_blocks_")}
    pipe.load_lora_weights(doubles)
    layer = pipe.transformer.transformer_blocks[1].attn.to_k
    name = next(iter(layer.lora_A))
    loaded = _delta(layer.lora_A[name].weight, layer.lora_B[name].weight, layer.scaling[name])
    prefix = "transformer.transformer_blocks.1.attn.to_k"
    expected = _delta(peft_file[f"{prefix}.lora_A.weight"], peft_file[f"{prefix}.lora_B.weight"])
    torch.testing.assert_close(loaded, expected, rtol=2e-2, atol=1e-4)
    assert expected.abs().max() > 0  # trained: lora_B started at zero


def _random_lora(transformer, target: str, rank: int = 2) -> dict:
    """LoRA tensors of the right shapes (real memory) for a meta-device transformer."""
    add_flux_lora(transformer, rank, 1.0, target)
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(tuple(v.shape), generator=g) * 0.1 for k, v in lora_state_dict(transformer).items()}


@pytest.mark.parametrize(
    "target",
    ["all", pytest.param("attention", marks=pytest.mark.slow), pytest.param("mlp", marks=pytest.mark.slow), "tiny"],
)
def test_real_flux1_architecture_keys_map_to_comfyui_and_diffusers(target):
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    with torch.device("meta"):
        transformer = FluxTransformer2DModel(**FLUX1)
    peft_sd = _random_lora(transformer, target)
    kohya = kohya_flux_state_dict(peft_sd, out_features(transformer), 1.0, torch.float32)
    _check_comfy_names(kohya, transformer)
    peft_modules = {k.rsplit(".", 2)[0] for k in peft_sd}
    converted = _convert_kohya_flux_lora_to_diffusers(dict(kohya))  # raises on any key it cannot place
    modules = dict(transformer.named_modules())
    found = set()
    for key, value in converted.items():
        path, which = key.removeprefix("transformer.").rsplit(".", 2)[:2]
        layer = modules[path].base_layer if hasattr(modules[path], "base_layer") else modules[path]
        shape = value.shape[1] if which == "lora_A" else value.shape[0]
        assert shape == (layer.in_features if which == "lora_A" else layer.out_features), key
        if path in peft_modules:
            found.add(path)
        elif which == "lora_B":
            assert not value.any(), f"{path} got a LoRA it was not trained with"
    assert found == peft_modules  # none dropped
    sample = sorted(peft_modules)[0]
    torch.testing.assert_close(
        _delta(converted[f"transformer.{sample}.lora_A.weight"], converted[f"transformer.{sample}.lora_B.weight"]),
        _delta(peft_sd[f"{sample}.lora_A.weight"], peft_sd[f"{sample}.lora_B.weight"], 1.0 / 2),
    )


@pytest.mark.slow
def test_real_width_single_block_kohya_file_loads_into_flux_pipeline(tmp_path):
    """The single-block split in diffusers' loader assumes FLUX.1's widths: a one-single-block transformer at those
    widths (uninitialised weights, bf16) loads our fused linear1/linear2/modulation LoRA back exactly."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    from lorarun.image.engine.flux.tiny import build_tiny_flux

    wide = dict(FLUX1, num_layers=0, num_single_layers=1, joint_attention_dim=32, pooled_projection_dim=32)
    with torch.device("meta"):
        meta = FluxTransformer2DModel(**wide)
    peft_sd = _random_lora(meta, "all", rank=4)
    path = tmp_path / "wide.safetensors"
    save_file(kohya_flux_state_dict(peft_sd, out_features(meta), 4.0, torch.float32), str(path))
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            transformer = FluxTransformer2DModel(**wide)
        transformer = transformer.to_empty(device="cpu")
    finally:
        torch.set_default_dtype(torch.float32)
    p = build_tiny_flux("dev")
    pipe = FluxPipeline(
        scheduler=p.scheduler,
        vae=p.vae,
        text_encoder=p.text_encoders[0],
        tokenizer=p.tokenizers[0],
        text_encoder_2=p.text_encoders[1],
        tokenizer_2=p.tokenizers[1],
        transformer=transformer,
    )
    pipe.load_lora_weights(str(path))
    for sub in ("attn.to_q", "attn.to_v", "proj_mlp", "proj_out", "norm.linear"):
        layer = dict(transformer.named_modules())[f"single_transformer_blocks.0.{sub}"]
        name = next(iter(layer.lora_A))
        loaded = _delta(layer.lora_A[name].weight, layer.lora_B[name].weight, layer.scaling[name])
        key = f"single_transformer_blocks.0.{sub}"
        expected = _delta(peft_sd[f"{key}.lora_A.weight"], peft_sd[f"{key}.lora_B.weight"])
        torch.testing.assert_close(loaded, expected, rtol=2e-2, atol=2e-3)


def test_timestep_sampling_matches_kohya_formulas():
    g = torch.Generator().manual_seed(3)
    n = torch.randn(4, generator=torch.Generator().manual_seed(3))
    t = sample_t(4, "shift", shift=3.0, sigmoid_scale=1.0, image_tokens=1024, generator=g, device="cpu")
    s = torch.sigmoid(n)
    torch.testing.assert_close(t, 3.0 * s / (1 + 2.0 * s))
    assert auto_shift_mu(256) == pytest.approx(0.5) and auto_shift_mu(4096) == pytest.approx(1.15)
    t = sample_t(
        4,
        "flux_shift",
        shift=3.0,
        sigmoid_scale=1.0,
        image_tokens=4096,
        generator=torch.Generator().manual_seed(3),
        device="cpu",
    )
    mu = torch.exp(torch.tensor(1.15))
    torch.testing.assert_close(t, mu / (mu + (1 / s - 1)))


def test_flow_step_for_dev_and_schnell():
    """One flow-matching step on the tiny model for every timestep sampling: the LoRA gets gradients; dev's guidance
    value reaches the transformer (a different value changes the loss), schnell runs without one; the T5 mask path
    runs."""
    from lorarun.image.engine.flux.step import flow_loss
    from lorarun.image.engine.flux.tiny import build_tiny_flux

    latents, t5, pooled = torch.randn(2, 16, 8, 8), torch.randn(2, 6, 32), torch.randn(2, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])

    def loss(transformer, guidance, sampling, m=None):
        return flow_loss(
            transformer,
            latents,
            t5,
            pooled,
            m,
            None,
            torch.Generator().manual_seed(5),
            sampling=sampling,
            shift=3.1582,
            sigmoid_scale=1.0,
            guidance=guidance,
        )

    dev = build_tiny_flux("dev").transformer
    params = add_flux_lora(dev, 4, 4.0, "all")
    for p in params:  # lora_B starts at zero: give the adapters a value so gradients reach lora_A too
        torch.nn.init.normal_(p, std=0.02)
    schnell = build_tiny_flux("schnell").transformer
    assert schnell.config.guidance_embeds is False
    for sampling in ("shift", "sigmoid", "uniform", "sigma", "flux_shift"):
        for p in params:
            p.grad = None
        value = loss(dev, 1.0, sampling, mask)
        value.backward()
        assert torch.isfinite(value) and all(p.grad is not None for p in params), sampling
        assert not torch.allclose(loss(dev, 1.0, sampling), loss(dev, 3.5, sampling))
        assert torch.isfinite(loss(schnell, None, sampling))


def test_shipped_flux_configs_build_the_published_architectures():
    """The configs single files are built with: FLUX.1's parameter counts (engine.md §6: transformer 11,901,408,320;
    T5-XXL encoder 4,762,310,656; CLIP-L 123,060,480); schnell has no guidance input."""
    from diffusers import FluxTransformer2DModel
    from transformers import AutoConfig, CLIPTextModel, T5EncoderModel

    from lorarun.image.engine.flux.models import config_dir

    folder = str(config_dir("dev"))
    with torch.device("meta"):
        transformer = FluxTransformer2DModel.from_config(
            FluxTransformer2DModel.load_config(folder, subfolder="transformer")
        )
        clip = CLIPTextModel(AutoConfig.from_pretrained(folder, subfolder="text_encoder"))
        t5 = T5EncoderModel(AutoConfig.from_pretrained(folder, subfolder="text_encoder_2"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(transformer), count(t5), count(clip)) == (11_901_408_320, 4_762_310_656, 123_060_480)
    assert (
        FluxTransformer2DModel.load_config(str(config_dir("schnell")), subfolder="transformer")["guidance_embeds"]
        is False
    )


def test_single_file_text_encoders_load_comfyui_style_files(tmp_path):
    """clip_l.safetensors keeps transformers' old `text_model.` level; t5xxl files have no tied embed_tokens."""
    from lorarun.image.engine.flux.models import _load_text_encoder
    from lorarun.image.engine.flux.tiny import build_tiny_flux
    from lorarun.image.schema import ConfigError

    clip, t5 = build_tiny_flux("dev").text_encoders
    clip.config.save_pretrained(tmp_path / "configs" / "text_encoder")
    t5.config.save_pretrained(tmp_path / "configs" / "text_encoder_2")
    save_file(
        {"text_model." + k: v.contiguous() for k, v in clip.state_dict().items()}, str(tmp_path / "clip_l.safetensors")
    )
    save_file(
        {k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"},
        str(tmp_path / "t5.safetensors"),
    )
    configs = str(tmp_path / "configs")
    loaded_clip = _load_text_encoder(
        "unused/repo", configs, "text_encoder", str(tmp_path / "clip_l.safetensors"), "clip", None
    )
    loaded_t5 = _load_text_encoder(
        "unused/repo", configs, "text_encoder_2", str(tmp_path / "t5.safetensors"), "t5", None
    )
    ids = torch.tensor([[49406, 320, 1125, 49407]])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded_clip(ids).pooler_output.float(), clip(ids).pooler_output, rtol=0.05, atol=0.05
        )
        t5_ids = torch.tensor([[4, 5, 6, 1]])
        torch.testing.assert_close(loaded_t5(t5_ids)[0].float(), t5(t5_ids)[0], rtol=0.05, atol=0.05)
    with pytest.raises(ConfigError, match="not a CLIP text encoder for Flux"):
        _load_text_encoder("unused/repo", configs, "text_encoder", str(tmp_path / "t5.safetensors"), "clip", None)
