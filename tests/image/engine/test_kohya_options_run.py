"""The kohya options in real engine runs (CPU, tiny models): one run per family with many options at once. Each
must finish, and the LoCon file must load through diffusers' kohya loader with every key used, computing what a
manual merge of the same weights computes. The options' math is checked against kohya in test_kohya_options.py."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # two tiny-model training runs

from .engine_helpers import engine_config, read_events, run_engine, write_config  # noqa: E402

RUNS = {
    "sd15": dict(
        dataset={"shuffle_caption": True, "keep_tokens_separator": "|||", "caption_tag_dropout_rate": 0.3},
        training={
            "max_train_epochs": 3,
            "save_every_n_epochs": 1,
            "save_last_n_epochs": 1,
            "conv_dim": 2,
            "conv_alpha": 1,
            "network_dropout": 0.1,
            "rank_dropout": 0.1,
            "module_dropout": 0.1,
            "scale_weight_norms": 0.05,
            "multires_noise_iterations": 3,
            "multires_noise_discount": 0.3,
            "ip_noise_gamma": 0.1,
            "ip_noise_gamma_random_strength": True,
            "zero_terminal_snr": True,
            "loss_type": "huber",
            "huber_schedule": "snr",
            "huber_c": 0.1,
            "debiased_estimation_loss": True,
            "optimizer_type": "Prodigy",
            "learning_rate": 1.0,
            "text_encoder_lr": 1.0,
            "lr_scheduler": "cosine_with_min_lr",
            "lr_scheduler_min_lr_ratio": 0.1,
            "save_precision": "float",
        },
    ),
    "sdxl": dict(
        training={
            "max_train_epochs": 2,
            "conv_dim": 2,
            "text_encoder_lr": 0,
            "optimizer_type": "DAdaptAdam",
            "learning_rate": 1.0,
            "lr_scheduler": "cosine",
            "lr_scheduler_args": ["num_cycles=1.0"],
            "loss_type": "smooth_l1",
            "huber_schedule": "exponential",
            "noise_offset": 0.05,
            "noise_offset_random_strength": True,
            "save_precision": "float",
        }
    ),
}


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, tmp_path_factory, dataset, asset_cache):
    family = request.param
    tmp = tmp_path_factory.mktemp(f"kohya-{family}")
    cfg = engine_config(tmp, dataset, family, **RUNS[family])
    result = run_engine(write_config(tmp, cfg))
    assert result.returncode == 0, result.stderr[-3000:]
    return family, tmp / "out", cfg, read_events(tmp / "out")


def _load(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k).float() for k in f.keys()}, f.metadata()


def test_run_finishes_with_the_options_applied(run):
    family, out, cfg, events = run
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "finished"
    assert all(e["loss"] == e["loss"] and e["loss"] > 0 for e in events if e["event"] == "step")  # finite
    started = next(e for e in events if e["event"] == "started")
    t = cfg["training"]
    assert started["optimizer"] == t["optimizer_type"]
    sd, meta = _load(out / "tiny.safetensors")
    assert meta["ss_loss_type"] == t["loss_type"]
    assert json.loads(meta["ss_network_args"])["conv_dim"] == "2"
    if family == "sd15":
        # save_last_n_epochs 1: epoch 1's file went when epoch 2's was written; the final file is separate
        removed = [e for e in events if e["event"] == "removed"]
        assert [e["path"] for e in removed] == ["tiny-000001.safetensors"]
        assert not (out / "tiny-000001.safetensors").exists() and (out / "tiny-000002.safetensors").exists()
        listed = {f["path"] for f in json.loads((out / "manifest.json").read_text())["files"]}
        assert "tiny-000001.safetensors" not in listed and "tiny-000002.safetensors" in listed
        assert meta["ss_network_dropout"] == "0.1" and meta["ss_zero_terminal_snr"] == "True"
        assert meta["ss_caption_tag_dropout_rate"] == "0.3" and meta["ss_debiased_estimation"] == "True"
        steps = [e for e in events if e["event"] == "step"]
        assert steps[-1]["lr"] >= 0.1 * 1.0 - 1e-9  # cosine_with_min_lr stops at the floor, not at 0
        # scale_weight_norms: every module's weight delta (up·down·alpha/dim) is at most the max norm
        names = {k.rsplit(".", 2)[0] for k in sd if k.endswith("lora_down.weight")}
        for name in names:
            down, up, alpha = sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"], sd[f"{name}.alpha"]
            assert ((up.flatten(1) @ down.flatten(1)) * alpha / down.shape[0]).norm() <= 0.05 * (1 + 1e-4)
    # the Prodigy / D-Adaptation rate warning does not fire at lr 1.0
    assert not any("expect about 1.0" in e.get("message", "") for e in events if e["event"] == "warning")


def test_locon_file_loads_in_diffusers_with_every_key_used(run):
    from lorarun.image.engine.kohya_keys import te_prefixes, text_encoder_module_name, unet_module_name
    from lorarun.image.engine.lora import count_lora_layers
    from lorarun.image.engine.tiny import build_tiny_pipeline

    family, out, cfg, _ = run
    sd, _ = _load(out / "tiny.safetensors")
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in sd}
    conv3x3 = [
        m for m in modules if sd[f"{m}.lora_down.weight"].dim() == 4 and sd[f"{m}.lora_down.weight"].shape[-1] == 3
    ]
    assert conv3x3 and all(sd[f"{m}.alpha"].item() == (1.0 if family == "sd15" else 1.0) for m in conv3x3)
    assert all(sd[f"{m}.lora_down.weight"].shape[0] == 2 for m in conv3x3)
    if family == "sd15":
        assert (
            "lora_unet_down_blocks_0_resnets_0_conv1" in modules
            and "lora_unet_up_blocks_0_upsamplers_0_conv" in modules
        )
        assert "lora_unet_down_blocks_1_resnets_0_conv_shortcut" in modules  # 1x1 at network_dim, as kohya
    else:
        assert (
            "lora_unet_input_blocks_1_0_in_layers_2" in modules and "lora_unet_middle_block_2_out_layers_3" in modules
        )
        assert "lora_unet_input_blocks_3_0_op" in modules and "lora_unet_output_blocks_2_2_conv" in modules
        assert (
            "lora_unet_output_blocks_0_0_skip_connection" in modules
            and "lora_unet_input_blocks_1_0_emb_layers_1" in modules
        )

    loaded = build_tiny_pipeline(family)
    loaded.load_lora_weights(str(out / "tiny.safetensors"))
    encoders = [loaded.text_encoder] + ([loaded.text_encoder_2] if family == "sdxl" else [])
    assert count_lora_layers(loaded.unet) + sum(count_lora_layers(e) for e in encoders) == len(modules)

    merged = build_tiny_pipeline(family)
    lpb = merged.unet.config.layers_per_block
    used = set()

    def merge(model, name_of):
        for path, module in model.named_modules():
            try:
                name = name_of(path)
            except ValueError:
                continue
            if name in modules and hasattr(module, "weight"):
                down, up, alpha = sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"], sd[f"{name}.alpha"]
                with torch.no_grad():
                    module.weight += ((up.flatten(1) @ down.flatten(1)) * (alpha / down.shape[0])).view_as(
                        module.weight
                    )
                used.add(name)

    merge(merged.unet, lambda p: unet_module_name(p, family, lpb))
    for prefix, encoder in zip(
        te_prefixes(family), [merged.text_encoder] + ([merged.text_encoder_2] if family == "sdxl" else [])
    ):
        merge(encoder, lambda p, prefix=prefix: text_encoder_module_name(p, prefix))
    assert used == modules

    torch.manual_seed(0)
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    ctx = torch.randn(1, 77, merged.unet.config.cross_attention_dim)
    added = None
    if family == "sdxl":
        added = {"text_embeds": torch.randn(1, 48), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    base = build_tiny_pipeline(family)
    with torch.no_grad():
        outs = [p.unet(x, t, ctx, added_cond_kwargs=added).sample for p in (loaded, merged, base)]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert not torch.allclose(outs[0], outs[2], atol=1e-5)
