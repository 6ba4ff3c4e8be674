"""Caching reports how far it is (#12.5): `cache_text` calls progress(done, total) per batch of captions, ending at
total, and captions already cached on disk are not counted again."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_caption_caching_reports_n_of_m(tmp_path):
    from lorarun.image.engine import data
    from lorarun.image.engine.tiny import build_tiny

    parts = build_tiny("sd15")
    captions = [f"mychar, picture {i}" for i in range(5)] + ["mychar, picture 0"]  # 5 distinct
    seen: list[tuple[int, int]] = []
    out = data.cache_text(
        captions,
        "sd15",
        parts.tokenizers,
        parts.text_encoders,
        1,
        "tiny",
        tmp_path,
        "cpu",
        batch_size=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert len(out) == 5
    assert seen == [(2, 5), (4, 5), (5, 5)]
    seen.clear()
    data.cache_text(
        captions + ["new caption"],
        "sd15",
        parts.tokenizers,
        parts.text_encoders,
        1,
        "tiny",
        tmp_path,
        "cpu",
        batch_size=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(1, 1)]  # only the caption not on disk yet
