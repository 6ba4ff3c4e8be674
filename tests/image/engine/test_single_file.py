"""Single-file checkpoints (A1111 `.safetensors`) load with no hub access: the shipped config folders describe the
real models exactly, and a tiny LDM-format checkpoint we write ourselves trains through the engine's loader."""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")

from .engine_helpers import engine_config, read_events  # noqa: E402
from .ldm_checkpoint import pipeline_to_ldm  # noqa: E402

pytestmark = pytest.mark.slow  # runs the engine: scheduled with the long tests (tests/conftest.py)


@pytest.mark.parametrize(
    "variant, unet, vae, encoders",
    [
        ("sd15", 859_520_964, 83_653_863, [123_060_480]),
        ("sdxl", 2_567_463_684, 83_653_863, [123_060_480, 694_659_840]),
        ("sd2-v", 865_910_724, 83_653_863, [340_387_840]),
    ],
)
def test_shipped_configs_build_the_published_models(tmp_path, variant, unet, vae, encoders):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from lorarun.image.engine.assets import pipeline_config_dir

    family = "sdxl" if variant == "sdxl" else "sd15"
    folder = pipeline_config_dir(family, v2=variant == "sd2-v", cache_dir=tmp_path)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with torch.device("meta"):  # the real sizes, without allocating them
        assert count(UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))) == unet
        assert count(AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))) == vae
        subs = ["text_encoder", "text_encoder_2"][: len(encoders)]
        for sub, expected, cls in zip(subs, encoders, [CLIPTextModel, CLIPTextModelWithProjection]):
            assert count(cls(CLIPTextConfig.from_pretrained(folder / sub))) == expected
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    assert tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]
    if family == "sdxl":
        assert CLIPTokenizer.from_pretrained(folder / "tokenizer_2").pad_token == "!"


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_tiny_single_file_checkpoint_trains_offline(tmp_path, dataset, monkeypatch, family):
    """An A1111-layout checkpoint of the tiny model (SD1.5: cond_stage_model; SDXL: conditioner with an OpenCLIP
    second encoder) goes through the engine's single-file loader with the hub switched off, trains, and the LoRA
    loads on the diffusers pipeline of the same model."""
    from diffusers import StableDiffusionPipeline  # noqa: F401  (import before HF_HUB_OFFLINE takes effect)
    from safetensors.torch import save_file

    from lorarun.image.engine import assets
    from lorarun.image.engine.models import load_model
    from lorarun.image.engine.tiny import build_tiny_pipeline
    from lorarun.image.engine.tokenizer import write_tokenizer_files
    from lorarun.image.engine_config import EngineConfig

    pipe = build_tiny_pipeline(family)
    ckpt = tmp_path / f"tiny-{family}.safetensors"
    save_file(pipeline_to_ldm(pipe), str(ckpt))
    # The tiny model's own config folder, in the shape pipeline_config_dir() builds for the real ones.
    folder = tmp_path / "tinycfg"
    pipe.save_config(folder)
    for name in ("unet", "vae", "scheduler"):
        getattr(pipe, name).save_config(folder / name)
    pipe.text_encoder.config.save_pretrained(folder / "text_encoder")
    write_tokenizer_files(folder / "tokenizer")
    if family == "sdxl":
        pipe.text_encoder_2.config.save_pretrained(folder / "text_encoder_2")
        write_tokenizer_files(folder / "tokenizer_2", pad_token="!")
    monkeypatch.setattr(assets, "pipeline_config_dir", lambda *a, **k: folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    raw = engine_config(
        tmp_path,
        dataset,
        family,
        model={"base": str(ckpt)},
        training={"max_train_epochs": 1, "text_encoder_lr": 0},
        sample={"grid_strengths": []},
    )
    cfg = EngineConfig.from_dict(raw)
    cfg.validate()
    loaded = load_model(cfg.model)  # every weight exactly as in the pipeline we wrote out
    for name, module in [("unet", loaded.unet), ("vae", loaded.vae)] + [
        (n, m) for n, m in zip(("text_encoder", "text_encoder_2"), loaded.text_encoders)
    ]:
        ours, theirs = module.state_dict(), getattr(pipe, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert loaded.key.startswith("file:")

    from lorarun.image.engine.train import train

    assert train(cfg, step_event_interval_s=0) == 0
    assert read_events(tmp_path / "out")[-1]["event"] == "finished"
    fresh = build_tiny_pipeline(family)
    fresh.load_lora_weights(str(tmp_path / "out" / "tiny.safetensors"))
    shutil.rmtree(tmp_path / "work", ignore_errors=True)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_diffusers_folder_loads_every_part(tmp_path, family, monkeypatch):
    """`model.base` as a diffusers folder (what a hub id downloads to): every part, weights exact."""
    from lorarun.image.engine.models import load_model
    from lorarun.image.engine.tiny import build_tiny_pipeline
    from lorarun.image.engine_config import ModelConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = build_tiny_pipeline(family)
    pipe.save_pretrained(tmp_path / "model")
    model = load_model(ModelConfig(family=family, base=str(tmp_path / "model")))
    parts = [("unet", model.unet), ("vae", model.vae), ("text_encoder", model.text_encoders[0])]
    if family == "sdxl":
        parts.append(("text_encoder_2", model.text_encoders[1]))
        assert model.tokenizers[1].pad_token == "!"
    for name, module in parts:
        ours, theirs = module.state_dict(), getattr(pipe, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert len(model.text_encoders) == len(model.tokenizers) == (2 if family == "sdxl" else 1)
    assert model.key == f"diffusers:{tmp_path / 'model'}" and not model.v_prediction
