from pathlib import Path

from helpers_dataset import make_dataset, make_image

from lorarun.image.buckets import BucketSpec
from lorarun.image.dataset_scan import scan_dataset

SPEC = BucketSpec((512, 512))


def test_reference_job_steps(tmp_path):
    # The guides' reference job: 50 images × 10 repeats × 10 epochs, batch 2 → 2,500 steps.
    root = make_dataset(tmp_path / "ds", {"10_mychar": 50}, size=(512, 512))
    scan = scan_dataset(root, SPEC)
    assert not scan.problems
    assert scan.num_train_images == 500
    assert scan.steps_per_epoch(2) == 250
    assert scan.total_steps(2, 10) == 2500


def test_captions_any_case_extensions_and_class_token_fallback(tmp_path):
    root = tmp_path / "ds"
    make_image(root / "3_cat dog" / "a.PNG")
    make_image(root / "3_cat dog" / "b.JpEg")
    (root / "3_cat dog" / "a.caption").write_text("a caption from .caption\nsecond line ignored", encoding="utf-8")
    scan = scan_dataset(root, SPEC)
    assert not scan.errors
    subset = scan.subsets[0]
    assert subset.repeats == 3 and subset.class_tokens == "cat dog"
    captions = {Path(i.path).name: (i.caption, i.caption_from_file) for i in subset.images}
    assert captions["a.PNG"] == ("a caption from .caption", True)
    assert captions["b.JpEg"] == ("cat dog", False)
    assert len(scan.warnings) == 1 and "b.JpEg" in str(scan.warnings[0]) and "class tokens" in str(scan.warnings[0])


def test_corrupt_image_is_an_error_naming_the_file(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 2})
    bad = root / "10_x" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    scan = scan_dataset(root, SPEC)
    assert len(scan.errors) == 1
    assert "broken.jpg" in str(scan.errors[0]) and "cannot read image" in str(scan.errors[0])


def test_truncated_png_is_caught_because_every_image_is_decoded(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 1}, size=(256, 256))
    png = root / "10_x" / "img_000.png"
    png.write_bytes(png.read_bytes()[:-40])
    assert scan_dataset(root, SPEC).errors


def test_folder_without_repeat_prefix_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "ds", {"mychar": 2})
    scan = scan_dataset(root, SPEC)
    assert any("repeat prefix" in str(p) and "mychar" in p.path for p in scan.errors)


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "ds" / "10_x").mkdir(parents=True)
    scan = scan_dataset(tmp_path / "ds", SPEC)
    assert any("no training images" in str(p) for p in scan.errors)


def test_missing_folder_is_an_error(tmp_path):
    assert scan_dataset(tmp_path / "nope", SPEC).errors


def test_caption_not_utf8_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 1})
    (root / "10_x" / "img_000.txt").write_bytes("caf\xe9".encode("latin-1"))
    scan = scan_dataset(root, SPEC)
    assert len(scan.errors) == 1 and "UTF-8" in str(scan.errors[0]) and "img_000.txt" in scan.errors[0].path


def test_loose_images_in_the_root_are_an_error(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 1})
    make_image(root / "stray.png")
    assert any("stray.png" in p.path for p in scan_dataset(root, SPEC).errors)


def test_regularisation_images_are_repeated_to_match_training_images(tmp_path):
    train = make_dataset(tmp_path / "train", {"10_x": 5})
    reg = make_dataset(tmp_path / "reg", {"1_person": 3}, captions=False)
    scan = scan_dataset(train, SPEC, reg_root=reg)
    assert scan.num_train_images == 50 and scan.num_reg_images == 3
    assert sum(scan.bucket_counts().values()) == 100  # kohya fills reg up to the training count
    assert scan.steps_per_epoch(1) == 100


def test_buckets_follow_image_shapes(tmp_path):
    root = tmp_path / "ds"
    make_image(root / "2_x" / "wide.png", size=(1024, 512))
    make_image(root / "2_x" / "tall.png", size=(512, 1024))
    scan = scan_dataset(root, SPEC)
    buckets = {Path(i.path).name: i.bucket for i in scan.subsets[0].images}
    assert buckets["wide.png"][0] > buckets["wide.png"][1]
    assert buckets["tall.png"][0] < buckets["tall.png"][1]
    assert scan.steps_per_epoch(2) == 2  # one batch per bucket: 2 images in each, never mixed
