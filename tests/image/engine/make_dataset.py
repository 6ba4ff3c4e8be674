"""A small kohya dataset drawn with PIL: coloured shapes with captions, mixed aspect ratios.

`make_dataset(root)` → root/train/<repeats>_shapes/… and optionally root/reg/1_shape/…; returns (train, reg).
Usable as a script: `python tests/image/engine/make_dataset.py OUT_DIR`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 180, 60), "yellow": (230, 210, 40)}
SIZES = [(64, 64), (128, 40), (40, 128), (96, 64), (80, 80), (64, 128)]  # buckets 64x64, 96x32, 32x96 at 64² step 32


def draw(size: tuple[int, int], colour: str, shape: str) -> Image.Image:
    im = Image.new("RGB", size, (245, 245, 240))
    d = ImageDraw.Draw(im)
    w, h = size
    box = (w * 0.2, h * 0.2, w * 0.8, h * 0.8)
    if shape == "circle":
        d.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        d.rectangle(box, fill=COLOURS[colour])
    else:
        d.polygon([(w / 2, h * 0.15), (w * 0.85, h * 0.85), (w * 0.15, h * 0.85)], fill=COLOURS[colour])
    return im


def make_dataset(
    root: Path, *, n_images: int = 6, repeats: int = 2, with_reg: bool = False, class_tokens: str = "shapes"
) -> tuple[Path, Path | None]:
    root = Path(root)
    train = root / "train"
    folder = train / f"{repeats}_{class_tokens}"
    folder.mkdir(parents=True, exist_ok=True)
    shapes = ["circle", "square", "triangle"]
    colours = list(COLOURS)
    for i in range(n_images):
        colour, shape = colours[i % len(colours)], shapes[i % len(shapes)]
        draw(SIZES[i % len(SIZES)], colour, shape).save(folder / f"img{i:02d}.png")
        if i != n_images - 1:  # the last one has no caption: kohya falls back to the class tokens
            (folder / f"img{i:02d}.txt").write_text(f"lrn style, a {colour} {shape}, plain background\n")
    reg = None
    if with_reg:
        reg = root / "reg"
        reg_folder = reg / "1_shape"
        reg_folder.mkdir(parents=True, exist_ok=True)
        for i in range(2):
            draw((64, 64), colours[(i + 1) % 4], shapes[(i + 2) % 3]).save(reg_folder / f"reg{i}.png")
            (reg_folder / f"reg{i}.txt").write_text(f"a {shapes[(i + 2) % 3]}\n")
    return train, reg


if __name__ == "__main__":
    print(make_dataset(Path(sys.argv[1] if len(sys.argv) > 1 else "dataset")))
