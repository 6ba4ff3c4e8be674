"""The estimate counts captioning: the captioner's download and its time per image for the images that get a
caption; a caption-only job trains nothing."""

from __future__ import annotations

from helpers_dataset import make_dataset, write_job

from lorarun.image.caption_config import caption_model
from lorarun.runner.job.validate import validate_job
from lorarun.runner.price.caption_time import LOAD_SECONDS
from lorarun.runner.price.job_inputs import inputs_from_job


def _inputs(tmp_path, dataset_extra: str):
    data = make_dataset(tmp_path / "data", {"5_zz": 6})
    for i in range(4):  # four of six without a caption
        (data / "5_zz" / f"img_{i:03d}.txt").unlink()
    job = write_job(tmp_path / "job.yaml", data)
    text = job.read_text().replace(f"  path: {data}\n", f"  path: {data}\n{dataset_extra}")
    job.write_text(text)
    v = validate_job(job)
    return inputs_from_job(v.spec, v.scan)


def test_auto_adds_download_and_time_for_the_missing_captions(tmp_path):
    base = _inputs(tmp_path / "a", "")
    auto = _inputs(tmp_path / "b", "  captions: auto\n  caption_model: blip\n")
    blip = caption_model("blip")
    assert auto.caption_s == LOAD_SECONDS + 4 * blip.seconds_per_image and base.caption_s == 0
    assert auto.model_download_gb == base.model_download_gb + blip.download_gb
    assert auto.steps == base.steps > 0
    over = _inputs(tmp_path / "c", "  captions: auto\n  caption_model: blip\n  caption_overwrite: true\n")
    assert over.caption_s == LOAD_SECONDS + 6 * blip.seconds_per_image


def test_caption_only_trains_nothing(tmp_path):
    only = _inputs(tmp_path, "  captions: only\n  caption_model: florence2\n")
    assert only.steps == 0 and only.sample_images == 0 and only.num_images == 0
    assert only.model_download_gb == caption_model("florence2").download_gb


def test_the_wd14_tagger_is_priced_like_the_other_captioners(tmp_path):
    base = _inputs(tmp_path / "a", "")
    tags = _inputs(tmp_path / "b", "  captions: auto\n  caption_model: wd14\n")
    wd14 = caption_model("wd14")
    assert tags.caption_s == LOAD_SECONDS + 4 * wd14.seconds_per_image
    assert tags.model_download_gb == base.model_download_gb + wd14.download_gb
