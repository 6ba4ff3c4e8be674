"""The final grid's layout: LoRA strengths across, seeds down, every cell labelled, and the prompt on top, in a font
large enough to read at any image size (the tiny demo's 64-pixel cells included). Torch-free, so it is testable
without rendering anything."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont

MIN_FONT_PX = 14


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow ≥ 10.1 with FreeType: a scalable font
    except TypeError:  # an older Pillow: the fixed bitmap font, still legible at its own size
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def compose_grid(cells: list[list[Image.Image]], strengths: list[float], seeds: list[int], prompt: str) -> Image.Image:
    """`cells[row][column]`: row = seed, column = strength. Strength 0 is the base model without the LoRA."""
    w, h = cells[0][0].size
    size = max(MIN_FONT_PX, min(w, h) // 12)
    font, small = _font(size), _font(max(MIN_FONT_PX, size * 4 // 5))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(4, size // 3)
    column_labels = ["no LoRA" if s == 0 else f"LoRA {s:g}" for s in strengths]
    row_labels = [f"seed {seed}" for seed in seeds]
    left = max(_text_size(probe, label, font)[0] for label in row_labels) + 2 * pad
    grid_w = left + w * len(strengths)
    # The prompt wraps to the grid's width, at most three lines (a long prompt ends with "…").
    chars = max(16, int(grid_w / (size * 0.55)))
    lines = textwrap.wrap(f"prompt: {prompt}", width=chars) or ["prompt: (empty)"]
    if len(lines) > 3:
        lines = lines[:3]
        lines[-1] = lines[-1][: max(0, chars - 1)] + "…"
    line_h = _text_size(probe, "Ag", small)[1] + pad // 2
    header = pad + line_h * len(lines) + pad + _text_size(probe, "Ag", font)[1] + pad
    grid = Image.new("RGB", (grid_w, header + h * len(seeds)), "white")
    draw = ImageDraw.Draw(grid)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, fill="black", font=small)
    label_y = pad + line_h * len(lines) + pad
    for c, label in enumerate(column_labels):
        tw = _text_size(draw, label, font)[0]
        draw.text((left + c * w + max(0, (w - tw) // 2), label_y), label, fill="black", font=font)
    for r, label in enumerate(row_labels):
        th = _text_size(draw, label, font)[1]
        draw.text((pad, header + r * h + max(0, (h - th) // 2)), label, fill="black", font=font)
        for c in range(len(strengths)):
            grid.paste(cells[r][c], (left + c * w, header + r * h))
    return grid
