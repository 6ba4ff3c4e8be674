"""The WD14 tagger path (image/engine/caption/wd14.py) with the built-in tiny tagger: a real ONNX file run by
onnxruntime, fed as the real wd-*-tagger models are (white-padded square, BGR, 0-255, NHWC), whose tags follow the
image's colours, so each test knows the tags an image must get."""

from __future__ import annotations

import pytest
from PIL import Image

from lorarun.image.caption_config import caption_model, caption_problems

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tagger():
    from lorarun.image.engine.caption.wd14 import load_tagger

    return load_tagger(caption_model("builtin:tiny-wd14"), device="cpu")


def plain(colour, size=(32, 32)):
    return Image.new("RGB", size, colour)


def test_tags_by_confidence_then_characters_without_ratings_or_weak_tags(tagger):
    blue, red = tagger.caption([plain((0, 0, 255)), plain((255, 0, 0))])
    # blue: blue_theme (0.998), 1girl (0.98), solo (0.88), ^_^ (0.62), then the character hatsune_miku (0.9997)
    assert blue == "blue theme, 1girl, solo, ^_^, hatsune miku"
    assert red == "red theme, 1girl, solo, ^_^"
    for text in (blue, red):
        assert "general" not in text and "sensitive" not in text  # ratings are left out (kohya's default)
        assert "simple background" not in text  # 0.27 < 0.35
        assert "tiny (lorarun)" not in text  # a character at 0.73 < 0.85


def test_the_image_is_padded_to_a_square_with_white_and_read_as_bgr(tagger):
    # A wide black strip: padded with white it averages 75 % grey, so every colour theme fires; square, none does.
    wide, square = tagger.caption([plain((0, 0, 0), (64, 16)), plain((0, 0, 0), (16, 16))])
    assert {"red theme", "green theme", "blue theme"} <= set(wide.split(", "))
    assert not any(t.endswith("theme") for t in square.split(", "))
    # Each colour lights its own theme only (red and blue above tell the channel order: RGB is read as BGR).
    (green,) = tagger.caption([plain((0, 255, 0), (40, 40))])
    assert green.startswith("green theme, ") and "red theme" not in green and "blue theme" not in green


def test_a_tags_file_of_another_shape_is_refused(tmp_path):
    from lorarun.image.engine.caption.wd14 import read_tags

    (tmp_path / "selected_tags.csv").write_text("id,tag\n0,1girl\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected tag_id,name,category,count"):
        read_tags(tmp_path / "selected_tags.csv")


def test_wd14_is_a_caption_model_with_its_download_and_speed():
    spec = caption_model("wd14")
    assert spec.repo_id == "SmilingWolf/wd-vit-tagger-v3" and spec.kind == "wd14" and spec.download_gb > 0
    assert caption_problems("auto", "wd14", None) == []
