"""Captioning in the engine with tiny models of the real transformers classes (BLIP, Florence-2), built from
configs: 20 generated images, the captions they lack written beside them and as pulled outputs, the existing ones
kept, the model recorded per caption; `auto` then trains on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_dataset import make_image

from .engine_helpers import engine_config, read_events, run_engine, write_config

pytest.importorskip("transformers")
pytestmark = [pytest.mark.engine, pytest.mark.slow]


def twenty_images(root: Path) -> Path:
    """20 generated images in two kohya folders; three carry a caption of their own."""
    for i in range(20):
        folder = "3_zzchar" if i < 12 else "1_zzstyle"
        image = make_image(root / folder / f"img_{i:02d}.png", size=(48 + 8 * (i % 3), 40), colour=(12 * i, 90, 200))
        if i in (0, 5, 15):
            image.with_suffix(".txt").write_text(f"my own caption {i}\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("model", ["builtin:tiny-blip", "builtin:tiny-florence2", "builtin:tiny-wd14"])
def test_captions_only_writes_the_missing_ones_and_records_the_model(tmp_path, model):
    data = twenty_images(tmp_path / "data")
    cfg = engine_config(tmp_path, data, dataset={"captions": "only", "caption_model": model}, device="cpu")
    result = run_engine(write_config(tmp_path, cfg))
    assert result.returncode == 0, result.stderr[-2000:]

    captions = sorted(data.rglob("*.txt"))
    assert len(captions) == 20
    for i in (0, 5, 15):  # kept, byte for byte
        folder = "3_zzchar" if i < 12 else "1_zzstyle"
        assert (data / folder / f"img_{i:02d}.txt").read_text(encoding="utf-8") == f"my own caption {i}\n"
    out = Path(cfg["output_dir"])
    record = json.loads((out / "captions" / "captions.json").read_text(encoding="utf-8"))
    assert record["model"] == model and len(record["captions"]) == 17
    for rel, entry in record["captions"].items():
        written = (data / entry["caption_file"]).read_text(encoding="utf-8").strip()
        assert written == entry["text"] == (out / "captions" / entry["caption_file"]).read_text().strip()
        tokens = "zzchar" if rel.startswith("3_") else "zzstyle"
        assert written.startswith(f"{tokens}, ") and len(written) > len(tokens) + 2, written  # trigger + words
        assert entry["model"] == model
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = sorted({f["kind"] for f in manifest["files"]})
    assert kinds == ["caption", "captions_record"] and len(manifest["files"]) == 18
    events = read_events(out)
    assert events[-1]["event"] == "finished" and events[-1]["captions"] == 17 and events[-1]["kept"] == 3
    progress = [e for e in events if e["event"] == "progress" and e["phase"] == "captioning"]
    assert progress[0]["done"] == 0 and progress[-1]["done"] == progress[-1]["total"] == 17
    assert not list(out.glob("*.safetensors"))  # `only` trains nothing


def test_overwrite_and_trigger(tmp_path):
    data = twenty_images(tmp_path / "data")
    cfg = engine_config(
        tmp_path,
        data,
        dataset={
            "captions": "only",
            "caption_model": "builtin:tiny-blip",
            "caption_overwrite": True,
            "caption_trigger": "ohwx",
        },
        device="cpu",
    )
    assert run_engine(write_config(tmp_path, cfg)).returncode == 0
    texts = [p.read_text(encoding="utf-8") for p in sorted(data.rglob("*.txt"))]
    assert len(texts) == 20 and all(t.startswith("ohwx, ") for t in texts)


def test_auto_captions_then_trains_on_them(tmp_path):
    data = twenty_images(tmp_path / "data")
    cfg = engine_config(
        tmp_path,
        data,
        dataset={"captions": "auto", "caption_model": "builtin:tiny-blip"},
        training={"max_train_epochs": 1, "batch_size": 4},
        device="cpu",
    )
    result = run_engine(write_config(tmp_path, cfg))
    assert result.returncode == 0, result.stderr[-2000:]
    out = Path(cfg["output_dir"])
    assert (out / "tiny.safetensors").is_file() and len(list(data.rglob("*.txt"))) == 20
    events = read_events(out)
    order = [e["event"] for e in events if e["event"] in ("captioning", "started", "finished")]
    assert order == ["captioning", "started", "finished"]
    from safetensors import safe_open

    with safe_open(str(out / "tiny.safetensors"), "np") as f:
        tags = json.loads(f.metadata()["ss_tag_frequency"])
    assert tags["3_zzchar"]["zzchar"] == 10  # the trigger starts each of the folder's 10 generated captions
