"""Regenerate `jobs/demo_dataset/`: a few small images of coloured shapes with captions, in kohya's layout.

The shipped copy is what `make demo` trains on; run this only to change it. Deterministic (no randomness).
"""

from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = [
    ("red circle", (220, 40, 40), "ellipse", (96, 64)),
    ("blue square", (40, 60, 220), "rectangle", (64, 64)),
    ("green circle", (40, 180, 60), "ellipse", (64, 96)),
    ("yellow square", (230, 200, 30), "rectangle", (96, 64)),
    ("purple circle", (150, 50, 170), "ellipse", (64, 64)),
    ("orange square", (240, 130, 20), "rectangle", (64, 96)),
]


def main(root: Path = Path(__file__).parent / "demo_dataset") -> None:
    folder = root / "5_lrnshape"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (caption, colour, shape, size) in enumerate(SHAPES):
        image = Image.new("RGB", size, (245, 245, 240))
        w, h = size
        box = (w // 5, h // 5, w - w // 5, h - h // 5)
        getattr(ImageDraw.Draw(image), shape)(box, fill=colour)
        image.save(folder / f"shape_{i:02d}.png")
        (folder / f"shape_{i:02d}.txt").write_text(f"lrnshape, a {caption} on a white background\n")


if __name__ == "__main__":
    main()
