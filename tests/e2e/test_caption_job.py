"""A job with `dataset.captions: auto` on a fake provider whose instance is a real sshd: the engine captions the
images that lack one (a tiny Florence-2 of the real class) on the rented machine, trains on them, and the captions
come home beside the user's images (the existing ones untouched), with the model that wrote each recorded."""

from __future__ import annotations

import json

import pytest
from support.cloud import tiny_job

from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def test_auto_captions_on_the_rental_then_training(vast_cloud, tmp_path, capsys):
    job = tiny_job(tmp_path, "vastai", epochs=1, images=4)
    text = job.read_text(encoding="utf-8").replace(
        "  path: data\n", "  path: data\n  captions: auto\n  caption_model: builtin:tiny-florence2\n"
    )
    job.write_text(text, encoding="utf-8")
    folder = tmp_path / "data" / "2_mychar"
    for i in (1, 2, 3):  # three images without a caption; img_000 keeps its own
        (folder / f"img_{i:03d}.txt").unlink()
    own = (folder / "img_000.txt").read_bytes()

    code = main(["submit", str(job), "--yes"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (folder / "img_000.txt").read_bytes() == own
    for i in (1, 2, 3):
        caption = (folder / f"img_{i:03d}.txt").read_text(encoding="utf-8")
        assert caption.startswith("mychar, ") and len(caption.strip()) > len("mychar, "), caption
    assert "captions: 3 written beside the images in" in err
    out = tmp_path / "out"
    record = json.loads((out / "captions" / "captions.json").read_text(encoding="utf-8"))
    assert record["model"] == "builtin:tiny-florence2" and sorted(record["captions"]) == [
        f"2_mychar/img_{i:03d}.png" for i in (1, 2, 3)
    ]
    assert (out / "e2e_lora.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(out / "e2e_lora.safetensors"), "np") as f:
        tags = json.loads(f.metadata()["ss_tag_frequency"])["2_mychar"]
    assert tags["mychar"] == 4  # the three generated captions and the user's own all start with the trigger
    (state,) = JobStore().all()
    assert state.phase == "done" and state.instance_destroyed
    events = [json.loads(line) for line in open(JobStore().job_dir(state.job_id) / "events.jsonl")]
    assert [e["event"] for e in events if e["event"] in ("captioning", "started")] == ["captioning", "started"]


def test_caption_command_on_a_rented_instance(vast_cloud, tmp_path, capsys):
    """`lorarun caption --provider vastai`: rent, upload, caption on the instance, pull, destroy; nothing trained."""
    from helpers_dataset import make_dataset

    data = make_dataset(tmp_path / "data", {"3_zzchar": 4}, captions=False)
    (data / "3_zzchar" / "img_000.txt").write_text("mine\n", encoding="utf-8")
    code = main(["caption", str(data), "--provider", "vastai", "--model", "builtin:tiny-blip", "--yes"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (data / "3_zzchar" / "img_000.txt").read_text(encoding="utf-8") == "mine\n"
    for i in (1, 2, 3):
        assert (data / "3_zzchar" / f"img_{i:03d}.txt").read_text(encoding="utf-8").startswith("zzchar, ")
    (state,) = JobStore().all()
    assert state.phase == "done" and state.instance_destroyed and vast_cloud.instance_ids() == []
    assert not list((tmp_path / "instances").rglob("*.safetensors"))
