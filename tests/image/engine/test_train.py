"""End-to-end engine runs on the tiny built-in models (CPU): outputs on schedule, events, manifest, and the LoRA
files read back by diffusers' kohya loader."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from lorarun.image.engine.events import sha256_file  # noqa: E402

from .engine_helpers import engine_config, read_events, run_engine, write_config  # noqa: E402

pytestmark = pytest.mark.slow  # runs the engine: scheduled with the long tests (tests/conftest.py)

PROMPT = "lrn style, a red circle"


def _run(tmp_path, dataset, family, **kw):
    cfg = engine_config(tmp_path, dataset, family, **kw)
    result = run_engine(write_config(tmp_path, cfg))
    assert result.returncode == 0, result.stderr[-3000:]
    return cfg, read_events(tmp_path / "out")


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def trained(request, tmp_path_factory, dataset, asset_cache):
    """One real run per family: 2 epochs, a checkpoint and samples every epoch, text encoder(s) trained."""
    family = request.param
    tmp = tmp_path_factory.mktemp(f"run-{family}")
    cfg, events = _run(tmp, dataset, family, sample={"prompts": [PROMPT], "every_n_epochs": 1})
    return family, tmp / "out", cfg, events


def test_run_writes_outputs_events_and_manifest(trained):
    family, out, cfg, events = trained
    kinds = [e["event"] for e in events]
    assert kinds[0] == "warning" and "fp32" in events[0]["message"]  # bf16 requested, CPU → fp32, said so
    assert kinds[1] == "started" and kinds[-1] == "finished"
    assert all(isinstance(e["t"], float) for e in events)
    started = events[1]
    # 4 images x 1 repeat, buckets 64x64 (2 images), 96x32, 32x96 at batch 2 → 3 one-bucket batches per epoch
    assert started["steps_per_epoch"] == 3 and started["total_steps"] == 6 and started["optimizer"] == "AdamW"
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 7))
    for e in steps:
        assert {"step", "total_steps", "epoch", "loss", "lr", "it_s"} <= set(e) and e["loss"] > 0
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]

    ckpts = [e for e in events if e["event"] == "checkpoint"]
    assert [c["path"] for c in ckpts] == ["tiny-000001.safetensors", "tiny.safetensors"]
    samples = [e["path"] for e in events if e["event"] == "sample"]
    assert samples == ["samples/tiny_e000001_00.png", "samples/tiny_e000002_00.png"]
    (grid,) = [e for e in events if e["event"] == "grid"]
    assert grid["path"] == "tiny_grid.png"
    for e in ckpts + [grid] + [e for e in events if e["event"] == "sample"]:
        path = out / e["path"]
        assert path.stat().st_size == e["size"] and sha256_file(path) == e["sha256"]

    manifest = json.loads((out / "manifest.json").read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == {c["path"] for c in ckpts} | set(samples) | {"tiny_grid.png"}
    assert listed["tiny.safetensors"]["kind"] == "final" and listed["tiny_grid.png"]["kind"] == "grid"
    for rel, entry in listed.items():
        assert sha256_file(out / rel) == entry["sha256"]
    assert events[-1]["path"] == "tiny.safetensors"

    from PIL import Image

    with Image.open(out / "tiny_grid.png") as im:  # 2 strengths x 1 seed of 64x64, a seed-label column, a header
        w, h = im.size
        assert w > 128 and h > 64
        # the cells sit in the bottom-right corner: the last 64 rows hold both 64x64 samples side by side
        cells = im.crop((w - 128, h - 64, w, h))
        assert cells.getextrema() != ((255, 255),) * 3  # pictures, not the white background


def test_lora_file_round_trips_through_diffusers_kohya_loader(trained):
    """Every key of the file is used by diffusers' kohya loader, at the file's alpha/rank, exactly as a manual
    merge of the same weights does (UNet output and text embeddings)."""
    from safetensors import safe_open

    from lorarun.image.engine.kohya_keys import te_prefixes, text_encoder_module_name, unet_module_name
    from lorarun.image.engine.lora import count_lora_layers
    from lorarun.image.engine.tiny import build_tiny_pipeline

    family, out, cfg, _ = trained
    path = out / "tiny.safetensors"
    with safe_open(str(path), "pt") as f:
        sd = {k: f.get_tensor(k).float() for k in f.keys()}
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in sd}

    loaded = build_tiny_pipeline(family)
    loaded.load_lora_weights(str(path))
    encoders = [loaded.text_encoder] + ([loaded.text_encoder_2] if family == "sdxl" else [])
    injected = count_lora_layers(loaded.unet) + sum(count_lora_layers(e) for e in encoders)
    assert injected == len(modules)  # no key left unloaded

    merged = build_tiny_pipeline(family)
    lpb = merged.unet.config.layers_per_block
    used = set()

    def merge(model, name_of):
        for path_, module in model.named_modules():
            try:
                name = name_of(path_)
            except ValueError:
                continue
            if name not in modules or not hasattr(module, "weight"):
                continue
            down, up, alpha = sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"], sd[f"{name}.alpha"]
            delta = (up.flatten(1) @ down.flatten(1)) * (alpha / down.shape[0])
            with torch.no_grad():
                module.weight += delta.view_as(module.weight)
            used.add(name)

    merge(merged.unet, lambda p: unet_module_name(p, family, lpb))
    for prefix, encoder in zip(
        te_prefixes(family), [merged.text_encoder] + ([merged.text_encoder_2] if family == "sdxl" else [])
    ):
        merge(encoder, lambda p, prefix=prefix: text_encoder_module_name(p, prefix))
    assert used == modules

    base = build_tiny_pipeline(family)
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8)
    t = torch.tensor([500])
    ctx = torch.randn(1, 77, merged.unet.config.cross_attention_dim)
    added = None
    if family == "sdxl":
        added = {"text_embeds": torch.randn(1, 48), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    with torch.no_grad():
        outs = [p.unet(x, t, ctx, added_cond_kwargs=added).sample for p in (loaded, merged, base)]
        embeds = [
            p.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
            for p in (loaded, merged, base)
        ]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert not torch.allclose(outs[0], outs[2], atol=1e-5)  # the LoRA does something
    assert torch.allclose(embeds[0], embeds[1], atol=1e-5)
    assert not torch.allclose(embeds[0], embeds[2], atol=1e-6)


def test_lora_keys_alpha_and_metadata_follow_kohya(trained):
    from safetensors import safe_open

    family, out, cfg, _ = trained
    with safe_open(str(out / "tiny.safetensors"), "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
        alphas = {k: f.get_tensor(k).item() for k in keys if k.endswith(".alpha")}
    assert all(k.startswith(("lora_unet_", "lora_te")) for k in keys)
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in keys)
    assert set(alphas.values()) == {2.0}  # the configured alpha (not alpha = rank = 4)
    if family == "sd15":
        assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
        assert "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight" in keys
        assert "lora_unet_up_blocks_1_attentions_1_transformer_blocks_0_ff_net_0_proj.alpha" in keys
        assert "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0.alpha" in keys
        assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
        assert "lora_te_text_model_encoder_layers_2_mlp_fc2.lora_up.weight" in keys
        assert not any(k.startswith(("lora_te1_", "lora_te2_")) for k in keys)
        assert meta["ss_base_model_version"] == "sd_v1"
        assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
        assert meta["modelspec.implementation"] == "diffusers"
        assert (
            len({k.rsplit(".", 2)[0] for k in keys if k.endswith("lora_down.weight")}) == 48 + 18
        )  # 4 transformer blocks x 12 + 3 CLIP layers x 6
    else:
        assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k.lora_down.weight" in keys
        assert "lora_unet_input_blocks_8_1_transformer_blocks_1_ff_net_2.lora_up.weight" in keys
        assert "lora_unet_middle_block_1_transformer_blocks_1_attn2_to_v.alpha" in keys
        assert "lora_unet_output_blocks_0_1_proj_out.alpha" in keys
        assert "lora_unet_output_blocks_5_1_proj_in.alpha" in keys
        assert "lora_te1_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight" in keys
        assert "lora_te2_text_model_encoder_layers_2_self_attn_out_proj.lora_up.weight" in keys
        assert not any("down_blocks" in k or "up_blocks" in k or "mid_block_" in k for k in keys)
        assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
        assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
        assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert not any(k.startswith(("lora_te_encoder", "lora_te1_encoder", "lora_te2_encoder")) for k in keys)
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2"
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_output_name"] == "tiny"
    assert meta["ss_steps"] == "6" and meta["ss_epoch"] == "2" and meta["ss_num_train_images"] == "4"
    assert meta["modelspec.sai_model_spec"] and meta["modelspec.resolution"] == "64x64"
    assert meta["modelspec.prediction_type"] == "epsilon"
    assert json.loads(meta["ss_dataset_dirs"]) == {"1_shapes": {"n_repeats": 1, "img_count": 4}}
    assert json.loads(meta["ss_tag_frequency"])["1_shapes"]["lrn style"] == 3
    assert len(meta["sshs_model_hash"]) == 64 and len(meta["sshs_legacy_hash"]) == 8


def test_dataset_and_training_options_together(tmp_path, dataset_with_reg, asset_cache):
    """Regularisation images with prior loss weight, flip_aug (flipped latents cached), caption shuffle/keep_tokens/
    dropout (so text is encoded every step, text encoder frozen), gradient accumulation and checkpointing, min-SNR,
    noise offset, v-prediction, warmup ratio — one run that must finish, then a re-run that reuses the caches."""
    from safetensors.torch import load_file

    train_dir, reg_dir = dataset_with_reg
    cfg = engine_config(
        tmp_path,
        train_dir,
        model={"v_parameterization": True},
        dataset={
            "reg_data_dir": str(reg_dir),
            "prior_loss_weight": 0.5,
            "flip_aug": True,
            "shuffle_caption": True,
            "keep_tokens": 1,
            "caption_dropout_rate": 0.2,
        },
        training={
            "max_train_epochs": 1,
            "text_encoder_lr": 0,
            "gradient_accumulation_steps": 2,
            "gradient_checkpointing": True,
            "min_snr_gamma": 5,
            "noise_offset": 0.05,
            "lr_warmup_steps": 0.5,
            "lr_scheduler": "cosine_with_restarts",
            "lr_scheduler_num_cycles": 2,
            "optimizer_type": "Adafactor",
        },
        sample={"grid_strengths": []},
    )
    config = write_config(tmp_path, cfg)
    result = run_engine(config)
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(tmp_path / "out")
    started = next(e for e in events if e["event"] == "started")
    # 4 train + 4 reg samples (reg fills up to the train count): buckets 64x64 x6, 96x32, 32x96 → 5 batches of 2,
    # 3 optimizer steps with accumulation 2
    assert started["num_reg_images"] == 2 and started["steps_per_epoch"] == 3
    assert started["cache_text_encoder_outputs"] is False and started["train_text_encoder"] is False
    assert started["optimizer"] == "Adafactor"
    assert events[-1]["event"] == "finished"
    latents = sorted((tmp_path / "work" / "cache" / "latents").glob("*.safetensors"))
    assert len(latents) == 6 and all("latents_flipped" in load_file(str(p)) for p in latents)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "tiny.safetensors"), "pt") as f:
        meta = f.metadata()
        assert not any(k.startswith("lora_te") for k in f.keys())  # UNet only
    assert meta["ss_base_model_version"] == "sd_v1_v" and meta["modelspec.prediction_type"] == "v"
    assert meta["ss_num_reg_images"] == "2" and meta["ss_prior_loss_weight"] == "0.5"
    assert meta["ss_gradient_accumulation_steps"] == "2" and meta["ss_min_snr_gamma"] == "5.0"
    # a fresh output folder with the same work_dir: the latents come from the cache (files untouched)
    mtimes = [p.stat().st_mtime_ns for p in latents]
    cfg["output_dir"] = str(tmp_path / "out2")
    import shutil

    shutil.rmtree(tmp_path / "work" / "state")
    assert run_engine(write_config(tmp_path, cfg)).returncode == 0
    assert [p.stat().st_mtime_ns for p in latents] == mtimes


def test_max_train_steps_without_epochs(tmp_path, dataset, asset_cache):
    """kohya: without epochs, max_train_steps decides; the run stops mid-epoch and still writes the final file."""
    from lorarun.image.engine.train import train
    from lorarun.image.engine_config import EngineConfig

    raw = engine_config(
        tmp_path,
        dataset,
        training={"max_train_epochs": None, "max_train_steps": 4, "save_every_n_epochs": None, "text_encoder_lr": 0},
        sample={"grid_strengths": []},
    )
    cfg = EngineConfig.from_dict(raw)
    cfg.validate()
    assert train(cfg, step_event_interval_s=0) == 0
    events = read_events(tmp_path / "out")
    started = next(e for e in events if e["event"] == "started")
    assert started["total_steps"] == 4 and started["epochs"] == 2
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
    assert [e["path"] for e in events if e["event"] == "checkpoint"] == ["tiny.safetensors"]
    assert events[-1]["event"] == "finished" and events[-1]["epoch"] == 2
