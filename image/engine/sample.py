"""Sample images during training and the final LoRA-strength × seed grid.

The pipeline shares the training modules (no copies); the LoRA strength is changed by rescaling the peft layers,
the same as a UI's LoRA weight. Called on the main process only.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from PIL import Image

from lorarun.image.engine.grid import compose_grid
from lorarun.image.engine.lora import set_lora_strength


def _size(cfg) -> tuple[int, int]:
    w, h = cfg.dataset.resolution
    return cfg.sample.width or w, cfg.sample.height or h


def _render(pipe, prompt: str, cfg, seed: int, device, autocast_dtype) -> Image.Image:
    width, height = _size(cfg)
    generator = torch.Generator("cpu").manual_seed(seed)  # CPU generator: the same image on any GPU
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    with torch.no_grad(), ctx:
        return pipe(
            prompt=prompt,
            negative_prompt=cfg.sample.negative_prompt or None,
            width=width,
            height=height,
            num_inference_steps=cfg.sample.steps,
            guidance_scale=cfg.sample.guidance_scale,
            generator=generator,
            output_type="pil",
        ).images[0]


def _pipeline(model, device):
    pipe = model.pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render_samples(
    model, cfg, prompts: list[str], out_dir: Path, label: str, device, autocast_dtype, progress=None
) -> list[Path]:
    """One PNG per prompt: `<output_name>_<label>_<i>.png` (kohya names samples `<name>_e000002_00.png`).
    `progress(done, total)` after each image (the controller shows "sampling k/n")."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = _pipeline(model, device)
    paths = []
    if progress:
        progress(0, len(prompts))
    for i, prompt in enumerate(prompts):
        image = _render(pipe, prompt, cfg, cfg.sample.seed + i, device, autocast_dtype)
        path = out_dir / f"{cfg.output_name}_{label}_{i:02d}.png"
        _save_png(image, path)
        paths.append(path)
        if progress:
            progress(i + 1, len(prompts))
    return paths


def render_grid(model, cfg, prompt: str, path: Path, lora_modules: list, device, autocast_dtype, progress=None) -> Path:
    """Rows = seeds, columns = LoRA strengths (0 = the base model), labelled; the strength is reset to 1 after."""
    strengths, seeds = list(cfg.sample.grid_strengths), list(cfg.sample.grid_seeds)
    pipe = _pipeline(model, device)
    cells: list[list[Image.Image]] = [[None] * len(strengths) for _ in seeds]  # type: ignore[list-item]
    total, done = len(strengths) * len(seeds), 0
    if progress:
        progress(0, total)
    try:
        for c, strength in enumerate(strengths):
            set_lora_strength(lora_modules, strength)
            for r, seed in enumerate(seeds):
                cells[r][c] = _render(pipe, prompt, cfg, seed, device, autocast_dtype)
                done += 1
                if progress:
                    progress(done, total)
    finally:
        set_lora_strength(lora_modules, 1.0)
    _save_png(compose_grid(cells, strengths, seeds, prompt), path)
    return path


def _save_png(image: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)
