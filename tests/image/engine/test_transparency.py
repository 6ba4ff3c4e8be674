"""Transparent images train flattened onto the background the scan names (issue 23.6), not onto whatever colour
the transparent pixels happen to store (PIL's plain convert("RGB"), kohya's `load_image`)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from PIL import Image

from lorarun.image.dataset_scan import FLATTEN_BACKGROUND
from lorarun.image.engine.data import load_image


def test_transparent_pixels_become_the_stated_background(tmp_path):
    path = tmp_path / "cut_out.png"
    im = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # fully transparent, stored black
    im.paste((200, 10, 10, 255), (8, 8, 24, 24))  # an opaque red square in the middle
    im.save(path)
    pixels, _ = load_image(path, (32, 32))
    rgb = pixels.add(1.0).mul(127.5).round()
    corner = tuple(int(v) for v in rgb[:, 0, 0])
    centre = tuple(int(v) for v in rgb[:, 16, 16])
    assert corner == FLATTEN_BACKGROUND
    assert centre == (200, 10, 10)


def test_opaque_images_are_unchanged(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (12, 34, 56)).save(path)
    pixels, _ = load_image(path, (32, 32))
    assert tuple(int(v) for v in pixels.add(1.0).mul(127.5).round()[:, 5, 5]) == (12, 34, 56)
