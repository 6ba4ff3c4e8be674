"""The final grid's layout: LoRA strengths across, seeds down, every cell labelled, white gaps between the cells,
and the prompt on top in a font sized to the whole grid, so that it stays legible when the grid is shown at page
width (the report shows it at most ~760 px wide: a 4 × 1024-px SDXL grid is shrunk about 5.5 times there).
Torch-free, so it is testable without rendering anything."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

MIN_FONT_PX = 14
PAGE_WIDTH_PX = 760  # the report's column (runner/run/report.py _CSS max-width)
READABLE_AT_PAGE_PX = 16  # the prompt's size once the grid is scaled down to the page


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow ≥ 10.1 with FreeType: a scalable font
    except TypeError:  # an older Pillow: the fixed bitmap font, still legible at its own size
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


@dataclass(frozen=True)
class GridLayout:
    cell_w: int
    cell_h: int
    gap: int  # white pixels between neighbouring cells
    left: int  # the seed labels' column
    header: int  # the prompt lines and the strength labels
    font_px: int  # labels
    prompt_px: int  # the prompt

    def cell_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        x = self.left + column * (self.cell_w + self.gap)
        y = self.header + row * (self.cell_h + self.gap)
        return x, y, x + self.cell_w, y + self.cell_h


def _gap(cell_w: int, cell_h: int) -> int:
    return max(4, min(cell_w, cell_h) // 32)


def _prompt_px(grid_w: int) -> int:
    """The prompt's size: READABLE_AT_PAGE_PX once the page has shrunk the grid to its column."""
    return max(MIN_FONT_PX, round(READABLE_AT_PAGE_PX * max(1.0, grid_w / PAGE_WIDTH_PX)))


def compose_grid(cells: list[list[Image.Image]], strengths: list[float], seeds: list[int], prompt: str) -> Image.Image:
    """`cells[row][column]`: row = seed, column = strength. Strength 0 is the base model without the LoRA."""
    w, h = cells[0][0].size
    gap, size = _gap(w, h), max(MIN_FONT_PX, min(w, h) // 12)
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(4, size // 3)
    column_labels = ["no LoRA" if s == 0 else f"LoRA {s:g}" for s in strengths]
    row_labels = [f"seed {seed}" for seed in seeds]
    left = max(_text_size(probe, label, font)[0] for label in row_labels) + 2 * pad
    grid_w = left + w * len(strengths) + gap * (len(strengths) - 1) + pad
    prompt_size = _prompt_px(grid_w)
    small = _font(prompt_size)
    # The prompt wraps to the grid's width, at most three lines (a long prompt ends with "…").
    chars = max(16, int((grid_w - 2 * pad) / (prompt_size * 0.55)))
    lines = textwrap.wrap(f"prompt: {prompt}", width=chars) or ["prompt: (empty)"]
    if len(lines) > 3:
        lines = lines[:3]
        lines[-1] = lines[-1][: max(0, chars - 1)] + "…"
    line_h = _text_size(probe, "Ag", small)[1] + pad // 2
    header = pad + line_h * len(lines) + pad + _text_size(probe, "Ag", font)[1] + pad
    layout = GridLayout(w, h, gap, left, header, size, prompt_size)
    grid_h = header + h * len(seeds) + gap * (len(seeds) - 1) + pad
    grid = Image.new("RGB", (grid_w, grid_h), "white")
    draw = ImageDraw.Draw(grid)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, fill="black", font=small)
    label_y = pad + line_h * len(lines) + pad
    for c, label in enumerate(column_labels):
        tw = _text_size(draw, label, font)[0]
        x0 = layout.cell_box(0, c)[0]
        draw.text((x0 + max(0, (w - tw) // 2), label_y), label, fill="black", font=font)
    for r, label in enumerate(row_labels):
        th = _text_size(draw, label, font)[1]
        y0 = layout.cell_box(r, 0)[1]
        draw.text((pad, y0 + max(0, (h - th) // 2)), label, fill="black", font=font)
        for c in range(len(strengths)):
            grid.paste(cells[r][c], layout.cell_box(r, c)[:2])
    return grid


def grid_layout(cell_w: int, cell_h: int, strengths: list[float], seeds: list[int], prompt: str) -> GridLayout:
    """Where compose_grid puts each cell (for tests and tools reading a grid back)."""
    cells = [[Image.new("RGB", (cell_w, cell_h))] * len(strengths) for _ in seeds]
    grid = compose_grid(cells, strengths, seeds, prompt)
    gap, size = _gap(cell_w, cell_h), max(MIN_FONT_PX, min(cell_w, cell_h) // 12)
    pad = max(4, size // 3)
    rows, columns = len(seeds), len(strengths)
    header = grid.size[1] - (cell_h * rows + gap * (rows - 1)) - pad
    left = grid.size[0] - (cell_w * columns + gap * (columns - 1)) - pad
    return GridLayout(cell_w, cell_h, gap, left, header, size, _prompt_px(grid.size[0]))
