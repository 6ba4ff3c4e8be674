"""Make small kohya-layout datasets with real image files for tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def make_image(path: Path, size=(64, 64), colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def make_dataset(root: Path, folders: dict[str, int] | None = None, *, size=(64, 64), captions: bool = True) -> Path:
    """folders: {"10_mychar": number_of_images}. Each image gets a caption file unless captions=False."""
    for folder, count in (folders or {"10_mychar": 3}).items():
        for i in range(count):
            image = make_image(root / folder / f"img_{i:03d}.png", size=size, colour=(40 * i % 255, 90, 160))
            if captions:
                image.with_suffix(".txt").write_text(f"mychar, picture {i}\n", encoding="utf-8")
    return root


def write_job(path: Path, dataset: Path, extra: str = "", *, resolution: int = 64) -> Path:
    path.write_text(
        f"""
name: testjob
model:
  base: builtin:tiny-sd15
dataset:
  path: {dataset}
  resolution: {resolution}
  min_bucket_reso: 32
  max_bucket_reso: 128
  bucket_reso_steps: 16
training:
  epochs: 1
  batch_size: 1
  optimizer: AdamW
  mixed_precision: "no"
{extra}
""",
        encoding="utf-8",
    )
    return path
