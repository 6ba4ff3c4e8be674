"""Unit tests of the engine's pieces: batching, captions, schedulers, events/manifest, hashes, tokenizer."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter

import pytest

from lorarun.image.engine.events import EventLog, sha256_file


def test_events_are_single_lines_and_manifest_is_atomic(tmp_path):
    log = EventLog(tmp_path, clock=lambda: 12.5)
    log.emit("started", total_steps=3)
    f = tmp_path / "a.safetensors"
    f.write_bytes(b"x" * 10)
    record = log.output("checkpoint", f, kind="checkpoint", step=1)
    log.close()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["started", "checkpoint"]
    assert record["path"] == "a.safetensors" and record["size"] == 10
    assert record["sha256"] == hashlib.sha256(b"x" * 10).hexdigest()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest == {
        "files": [{"path": "a.safetensors", "sha256": record["sha256"], "size": 10, "kind": "checkpoint"}],
        "updated": 12.5,
    }
    assert not list(tmp_path.glob("*.tmp"))
    # a second run (resume) appends and keeps the files already listed
    log2 = EventLog(tmp_path)
    g = tmp_path / "b.png"
    g.write_bytes(b"y")
    log2.output("sample", g, kind="sample")
    log2.close()
    assert [e["path"] for e in json.loads((tmp_path / "manifest.json").read_text())["files"]] == [
        "a.safetensors",
        "b.png",
    ]
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 3


def test_disabled_log_writes_nothing(tmp_path):
    log = EventLog(tmp_path / "o", enabled=False)
    log.emit("started")
    assert not (tmp_path / "o").exists()


def test_epoch_plan_matches_the_controllers_step_count(dataset_with_reg):
    pytest.importorskip("torch")
    from lorarun.image.buckets import BucketSpec
    from lorarun.image.dataset_scan import scan_dataset
    from lorarun.image.engine import data

    train, reg = dataset_with_reg
    scan = scan_dataset(train, BucketSpec((64, 64), True, 32, 128, 32), reg_root=reg)
    items = data.items_from_scan(scan, train, reg)
    samples = data.epoch_samples(scan, items)
    assert Counter(items[i].bucket for i in samples) == Counter(scan.bucket_counts())
    assert sum(1 for i in samples if items[i].is_reg) == scan.num_train_images  # reg fills up to the train count
    for bs in (1, 2, 3):
        batches = data.epoch_batches(samples, items, bs, seed=1, epoch=0)
        assert len(batches) == scan.steps_per_epoch(bs)
        assert all(len({items[i].bucket for i in b}) == 1 for b in batches)  # one bucket per batch
        assert sorted(i for b in batches for i in b) == sorted(samples)
    assert data.epoch_batches(samples, items, 2, 1, 3) == data.epoch_batches(samples, items, 2, 1, 3)
    assert data.epoch_batches(samples, items, 2, 1, 3) != data.epoch_batches(samples, items, 2, 1, 4)


def test_shards_have_equal_length():
    pytest.importorskip("torch")
    from lorarun.image.engine.data import shard_batches

    batches = [[i] for i in range(5)]
    a, b = shard_batches(batches, 0, 2), shard_batches(batches, 1, 2)
    assert len(a) == len(b) == 3 and {x for s in a + b for x in s} == {0, 1, 2, 3, 4}


def test_caption_options():
    pytest.importorskip("torch")
    from lorarun.image.engine.data import process_caption

    caption = "sks, red, circle, plain, background"
    rng = random.Random(0)
    outs = {process_caption(caption, rng, shuffle=True, keep_tokens=1, dropout_rate=0.0) for _ in range(30)}
    assert len(outs) > 1 and all(o.startswith("sks, ") for o in outs)
    assert all(sorted(o.split(", ")) == sorted(caption.split(", ")) for o in outs)
    dropped = [process_caption(caption, rng, shuffle=False, keep_tokens=0, dropout_rate=0.5) for _ in range(200)]
    assert 60 < dropped.count("") < 140 and set(dropped) == {"", caption}


def test_schedulers_follow_kohya():
    pytest.importorskip("torch")
    from lorarun.image.engine.optim import lr_lambda, warmup_steps

    assert warmup_steps(0.1, 200) == 20 and warmup_steps(15, 200) == 15 and warmup_steps(0, 200) == 0
    f = lr_lambda("cosine_with_restarts", total=100, warmup=10, num_cycles=2)
    assert f(0) == 0 and f(5) == 0.5 and f(10) == 1.0
    assert f(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * ((2 * 45 / 90) % 1.0))))
    assert f(54) < 0.01 and f(56) > 0.99  # the restart half-way
    assert lr_lambda("constant", 100, 10)(3) == 1.0  # kohya's constant ignores warmup
    assert lr_lambda("constant_with_warmup", 100, 10)(5) == 0.5
    assert lr_lambda("linear", 100, 0)(50) == 0.5
    assert lr_lambda("cosine", 100, 0)(50) == pytest.approx(0.5)
    assert lr_lambda("polynomial", 100, 0, power=2)(50) == pytest.approx(0.25)


def test_optimizer_choice(monkeypatch):
    pytest.importorskip("torch")
    import importlib.util

    from lorarun.image.engine.optim import build_optimizer, parse_optimizer_args, resolve_optimizer
    from lorarun.image.schema import ConfigError

    assert resolve_optimizer("auto", cuda=False) == "AdamW"
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_optimizer("AdamW8bit", cuda=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lion_pytorch" else real_find_spec(name, *a)
    )
    with pytest.raises(ConfigError, match="lion-pytorch"):
        resolve_optimizer("Lion", cuda=False)  # not installed: a clear error, not an ImportError mid-run
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    assert parse_optimizer_args(("weight_decay=0.01", "betas=0.9,0.99")) == {"weight_decay": 0.01, "betas": (0.9, 0.99)}
    import torch

    p = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer("Adafactor", [{"params": [p], "lr": 1e-3}], 1e-3, (), cuda=False)
    assert type(opt).__name__ == "Adafactor"
    opt = build_optimizer("AdamW", [{"params": [p], "lr": 1e-3}], 1e-3, ("weight_decay=0.1",), cuda=False)
    assert opt.defaults["weight_decay"] == 0.1


def test_kohya_hashes_match_sd_scripts_definition(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors import safe_open

    from lorarun.image.engine.save import kohya_hashes, write_lora

    # > 1 MiB so the legacy hash reads real bytes at offset 1 MiB
    tensors = {
        "lora_unet_x.lora_down.weight": torch.arange(400_000, dtype=torch.float32).reshape(4, -1),
        "lora_unet_x.alpha": torch.tensor(8.0),
    }
    meta = {"ss_network_dim": "4", "modelspec.title": "t"}
    path = write_lora(tmp_path / "l.safetensors", tensors, meta)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    with safe_open(str(path), "pt") as f:
        written = f.metadata()
    # sshs_model_hash: sha256 of everything after the header (the tensor bytes), independent of the metadata
    assert written["sshs_model_hash"] == hashlib.sha256(raw[8 + n :]).hexdigest()
    # legacy: of a serialisation with only the ss_* metadata, 64 KiB at 1 MiB
    from safetensors.torch import save

    ref = save(tensors, {"ss_network_dim": "4"})
    assert written["sshs_legacy_hash"] == hashlib.sha256(ref[0x100000:0x110000]).hexdigest()[:8]
    assert kohya_hashes(tensors, meta) == (written["sshs_model_hash"], written["sshs_legacy_hash"])
    assert sha256_file(path) == hashlib.sha256(raw).hexdigest()


def test_clip_tokenizer_from_the_shipped_bpe(asset_cache):
    pytest.importorskip("transformers")
    from lorarun.image.engine.tokenizer import load_tokenizer

    tok = load_tokenizer("clip_l")
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.model_max_length == 77 and tok.pad_token_id == 49407 and len(tok) == 49408
    assert load_tokenizer("clip_g").pad_token_id == 0  # SDXL tokenizer_2 pads with "!"


class _ZeroUNet:
    """Predicts zeros, so the loss is the weighted mean square of the target."""

    def __call__(self, sample, timesteps, hidden, added_cond_kwargs=None):
        import torch

        class Out:
            pass

        out = Out()
        out.sample = torch.zeros_like(sample)
        return out


@pytest.mark.parametrize("v_prediction", [False, True])
def test_step_math_min_snr_prior_weight_and_targets(v_prediction):
    torch = pytest.importorskip("torch")
    from lorarun.image.engine.step import NoiseSchedule, diffusion_loss

    schedule = NoiseSchedule.kohya("cpu")
    latents = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    weight = torch.tensor([1.0, 0.5, 1.0])

    def run(**kw):
        return diffusion_loss(
            _ZeroUNet(),
            latents,
            torch.zeros(3, 77, 8),
            None,
            weight,
            schedule,
            torch.Generator().manual_seed(3),
            v_prediction=v_prediction,
            **kw,
        )

    # replay the generator to know the noise and timesteps the step drew
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(latents.shape, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    a = schedule.sqrt_alpha[t].view(-1, 1, 1, 1)
    s = schedule.sqrt_one_minus_alpha[t].view(-1, 1, 1, 1)
    target = a * noise - s * latents if v_prediction else noise
    per_sample = target.pow(2).mean(dim=(1, 2, 3)) * weight
    assert torch.allclose(run(), per_sample.mean())
    snr = schedule.snr[t]
    kohya = torch.minimum(snr, torch.full_like(snr, 5.0)) / (snr + 1 if v_prediction else snr)
    assert torch.allclose(run(min_snr_gamma=5.0), (per_sample * kohya).mean())
    assert not torch.allclose(run(noise_offset=0.1), run())


def test_launch_decisions(monkeypatch):
    from lorarun.image.engine.launch import distributed_command, wanted_processes

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert wanted_processes("3", "auto") == 3
    assert wanted_processes("auto", "cpu") == 1
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert wanted_processes("4", "auto") == 1  # already a rank: never re-launch
    cmd = distributed_command(2, ["train", "--config", "c.json", "--num-processes", "auto"])
    assert cmd[1:6] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    assert cmd[cmd.index("lorarun.image.engine") + 1 :] == ["train", "--config", "c.json", "--num-processes", "1"]
