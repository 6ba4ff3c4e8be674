"""What captioning on the rental adds to the estimate: the captioning model's download, and its time per image
for the images that get a caption (those without one, or all with `caption_overwrite`). A caption-only job
(`lorarun caption`) trains nothing, so its steps, samples and latent caching are zero.

The per-image times and download sizes are the assumed figures of `image/caption_config.py` (a 24 GB consumer
GPU in fp16); on a machine without a GPU captioning is far slower, which CPU_FACTOR approximates.
"""

from __future__ import annotations

import dataclasses

from lorarun.image.caption_config import caption_model

LOAD_SECONDS = 20.0  # loading the captioner's weights onto the GPU (assumed)
CPU_FACTOR = 25.0  # CPU vs a consumer GPU for a transformer captioner in fp32 (assumed)
CAPTION_BYTES = 300  # one caption file brought home


def images_to_caption(spec, scan) -> int:
    if spec.dataset.captions == "given" or scan is None:
        return 0
    if spec.dataset.caption_overwrite:
        return scan.num_images
    return sum(s.captions_missing for s in scan.subsets if not s.is_reg)


def with_captioning(inputs, spec, scan):
    """`inputs` (an EstimateInputs) with the captioning step added."""
    count = images_to_caption(spec, scan)
    if spec.dataset.captions == "given":
        return inputs
    model = caption_model(spec.dataset.caption_model)
    seconds = (LOAD_SECONDS + model.seconds_per_image * count) if count else 0.0
    changes: dict = {"caption_s": seconds, "model_download_gb": inputs.model_download_gb + model.download_gb}
    if spec.dataset.captions == "only":
        changes.update(
            steps=0,
            sample_images=0,
            num_images=0,
            output_bytes=count * CAPTION_BYTES,
            model_download_gb=model.download_gb,
        )
    return dataclasses.replace(inputs, **changes)


def caption_seconds(inputs, cpu: bool) -> float:
    return inputs.caption_s * (CPU_FACTOR if cpu else 1.0)
