"""Aspect-ratio buckets exactly as kohya's sd-scripts makes them (`library/model_util.py::make_bucket_resolutions`,
`library/train_util.py::BucketManager`). Pure functions: the laptop uses them to count steps, the engine to batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Reso = tuple[int, int]  # (width, height)


def make_bucket_resolutions(
    max_reso: Reso, min_size: int = 256, max_size: int = 1024, divisible: int = 64
) -> list[Reso]:
    max_width, max_height = max_reso
    max_area = max_width * max_height
    resos: set[Reso] = set()
    width = int(math.sqrt(max_area) // divisible) * divisible
    resos.add((width, width))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    return sorted(resos)


@dataclass(frozen=True)
class BucketSpec:
    resolution: Reso
    enable_bucket: bool = True
    min_size: int = 256
    max_size: int = 1024
    steps: int = 64
    no_upscale: bool = False


def _round_to_steps(x: float, steps: int) -> int:
    x = int(x + 0.5)
    return x - x % steps


def select_bucket(image_size: Reso, spec: BucketSpec, predefined: list[Reso] | None = None) -> Reso:
    """The bucket (width, height) an image of `image_size` trains at."""
    if not spec.enable_bucket:
        return spec.resolution
    width, height = image_size
    aspect = width / height
    max_area = spec.resolution[0] * spec.resolution[1]
    if not spec.no_upscale:
        predefined = predefined or make_bucket_resolutions(spec.resolution, spec.min_size, spec.max_size, spec.steps)
        # kohya: the predefined bucket whose aspect ratio is closest (first one on a tie, as numpy's argmin).
        return min(predefined, key=lambda r: abs(r[0] / r[1] - aspect))
    if width * height > max_area:
        resized_w = math.sqrt(max_area * aspect)
        resized_h = max_area / resized_w
        bw = _round_to_steps(resized_w, spec.steps)
        bh_in_w = _round_to_steps(bw / aspect, spec.steps)
        ar_w = bw / bh_in_w if bh_in_w else float("inf")
        bh = _round_to_steps(resized_h, spec.steps)
        bw_in_h = _round_to_steps(bh * aspect, spec.steps)
        ar_h = bw_in_h / bh if bh else float("inf")
        if abs(ar_w - aspect) < abs(ar_h - aspect):
            width, height = bw, int(bw / aspect + 0.5)
        else:
            width, height = int(bh * aspect + 0.5), bh
    return (width - width % spec.steps, height - height % spec.steps)


def steps_per_epoch(bucket_counts: dict[Reso, int], batch_size: int) -> int:
    """kohya fills each bucket's batches separately: sum over buckets of ceil(images × repeats / batch)."""
    return sum(math.ceil(n / batch_size) for n in bucket_counts.values() if n)
