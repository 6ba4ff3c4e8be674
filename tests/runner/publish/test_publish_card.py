"""The publish pieces without a Hub: where the token comes from, trigger words from the LoRA's own metadata, the
last epoch's samples, and a model card whose YAML header the Hub accepts."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.numpy import save_file

from lorarun.runner.publish.hub import HubTokenError, hub_token
from lorarun.runner.publish.model_card import build_release, last_samples, trigger_words


def test_no_token_is_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored login
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "token"))
    with pytest.raises(HubTokenError, match=r"^publishing to the Hugging Face Hub needs a token: make a write token"):
        hub_token()
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert hub_token() == "hf_x"


def test_trigger_words_from_metadata():
    md = {
        "modelspec.trigger_phrase": "ohwx, ohwx person",
        "ss_dataset_dirs": json.dumps({"10_mychar": {}, "5_ohwx": {}, "style": {}}),
    }
    assert trigger_words(md, ("extra",)) == ("ohwx", "ohwx person", "mychar", "style", "extra")
    assert trigger_words({}) == ()


def test_last_samples_are_the_last_epochs(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("lora_e000001_00.png", "lora_e000002_01.png", "lora_e000002_00.png", "other_e000009_00.png"):
        (samples / name).write_bytes(b"png")
    assert [(p.name, i) for p, i in last_samples(tmp_path, "lora")] == [
        ("lora_e000002_00.png", 0),
        ("lora_e000002_01.png", 1),
    ]


def test_release_files_and_card(tmp_path):
    from lorarun.runner.job.spec import build_job

    out = tmp_path / "out"
    (out / "samples").mkdir(parents=True)
    md = {
        "ss_dataset_dirs": json.dumps({"3_zzchar": {"n_repeats": 3, "img_count": 2}}),
        "ss_network_alpha": "8",
        "ss_steps": "40",
        "ss_num_epochs": "4",
        "modelspec.resolution": "512x512",
    }
    save_file(
        {"lora_unet_x.lora_down.weight": __import__("numpy").zeros((2, 2), "float32")}, out / "me.safetensors", md
    )
    (out / "me_grid.png").write_bytes(b"grid")
    (out / "samples" / "me_e000004_00.png").write_bytes(b"s0")
    spec = build_job(
        {
            "model": {"base": "stable-diffusion-v1-5/stable-diffusion-v1-5"},
            "sample": {"prompts": ["zzchar, a hat"]},
            "output": {"name": "me", "hub": "me/me-lora"},
        },
        tmp_path / "job.yaml",
    )
    release = build_release(spec, out, "me/me-lora", tmp_path / "stage")
    assert [f.path_in_repo for f in release.files] == [
        "me.safetensors",
        "me_grid.png",
        "samples/me_e000004_00.png",
        "README.md",
    ]
    header = yaml.safe_load(release.card.split("---\n")[1])
    assert header["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert header["instance_prompt"] == "zzchar"
    assert header["widget"] == [{"text": "zzchar, a hat", "output": {"url": "samples/me_e000004_00.png"}}]
    assert "stable-diffusion" in header["tags"] and "lora" in header["tags"]
    assert 'pipe.load_lora_weights("me/me-lora", weight_name="me.safetensors")' in release.card
    assert "| steps | 40 (4 epochs) |" in release.card and "alpha 8" in release.card
