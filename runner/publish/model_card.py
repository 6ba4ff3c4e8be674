"""What a published LoRA carries to the Hub: the verified file, its grid, the last epoch's samples, and a model
card (README.md) saying what it is and how to load it. Everything is read from the files that came home (the
LoRA's own kohya/ModelSpec metadata) and the job file, never from the instance.

The card's YAML header uses the Hub's model-card fields (huggingface_hub `ModelCardData`: base_model, tags,
instance_prompt, widget with `output.url`), which the Hub shows as the model's gallery and "trigger words".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from lorarun.runner.publish.hub import PublishedFile

SAMPLE_NAME = re.compile(r"^(?P<name>.+)_e(?P<epoch>\d{6})_(?P<index>\d{2})\.png$")
FAMILY_TAGS = {"sd15": "stable-diffusion", "sd2": "stable-diffusion", "sdxl": "stable-diffusion-xl", "flux": "flux"}


@dataclass(frozen=True)
class Release:
    files: tuple[PublishedFile, ...]  # README.md last
    trigger_words: tuple[str, ...]
    card: str


def read_lora_metadata(path: Path) -> dict[str, str]:
    """The safetensors header's `__metadata__` (kohya ss_*, modelspec.*): a file that does not parse is refused."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def trigger_words(metadata: dict[str, str], extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The words that call the LoRA up: ModelSpec's trigger phrase, then each kohya folder's class tokens
    (`10_mychar` → `mychar`, as ss_dataset_dirs names them), then any given."""
    words: list[str] = []
    phrase = metadata.get("modelspec.trigger_phrase", "")
    words += [w.strip() for w in phrase.split(",") if w.strip()]
    try:
        dirs = json.loads(metadata.get("ss_dataset_dirs") or "{}")
    except json.JSONDecodeError:
        dirs = {}
    for folder in dirs:
        tokens = folder.split("_", 1)[1] if "_" in folder and folder.split("_", 1)[0].isdigit() else folder
        words += [tokens.strip()] if tokens.strip() else []
    words += list(extra)
    return tuple(dict.fromkeys(words))  # first seen first, no repeats


def last_samples(output_dir: Path, name: str) -> list[tuple[Path, int]]:
    """The last epoch's sample images of `name` (the engine writes them to `samples/`) with their prompt index."""
    found: dict[int, list[tuple[Path, int]]] = {}
    for path in (output_dir / "samples").glob(f"{name}_e*_*.png"):
        m = SAMPLE_NAME.match(path.name)
        if m and m["name"] == name:
            found.setdefault(int(m["epoch"]), []).append((path, int(m["index"])))
    if not found:
        return []
    return sorted(found[max(found)], key=lambda pair: pair[1])


def build_release(spec, output_dir: Path, repo_id: str, staging: Path) -> Release:
    """The files to publish for job `spec` (whose outputs are in `output_dir`); the card is written to `staging`."""
    name = spec.output.name
    lora = output_dir / f"{name}.safetensors"
    metadata = read_lora_metadata(lora)
    words = trigger_words(metadata)
    files = [PublishedFile(lora.name, lora)]
    grid = output_dir / f"{name}_grid.png"
    if grid.is_file():
        files.append(PublishedFile(grid.name, grid))
    samples = last_samples(output_dir, name)
    prompts = list(spec.sample.prompts)
    shown = []
    for path, index in samples:
        files.append(PublishedFile(f"samples/{path.name}", path))
        shown.append((f"samples/{path.name}", prompts[index] if index < len(prompts) else ""))
    card = model_card(spec, metadata, repo_id, words, grid.name if grid.is_file() else None, shown)
    staging.mkdir(parents=True, exist_ok=True)
    readme = staging / "README.md"
    readme.write_text(card, encoding="utf-8")
    files.append(PublishedFile("README.md", readme))
    return Release(tuple(files), words, card)


def model_card(spec, md: dict[str, str], repo_id: str, words, grid: str | None, samples: list[tuple[str, str]]) -> str:
    name, family, base = spec.output.name, spec.model.family, spec.model.base
    hub_base = base if re.match(r"^[\w.\-]+/[\w.\-]+$", base) and not base.startswith("builtin:") else None
    header: dict = {
        "tags": ["lora", "text-to-image", FAMILY_TAGS.get(family, family), "diffusers", "lorarun"],
        "library_name": "diffusers",
    }
    if hub_base:
        header["base_model"] = hub_base
    if words:
        header["instance_prompt"] = ", ".join(words)
    if samples:
        header["widget"] = [{"text": prompt, "output": {"url": path}} for path, prompt in samples]
    t = spec.training
    settings = [
        ("base model", base),
        ("family", family),
        ("network", f"LoRA, dim {t.network_dim}, alpha {md.get('ss_network_alpha', t.network_alpha)}"),
        ("steps", f"{md.get('ss_steps', '?')} ({md.get('ss_num_epochs', '?')} epochs)"),
        ("images", md.get("ss_num_train_images", "?")),
        ("resolution", md.get("modelspec.resolution", "?")),
        ("learning rate", f"{t.learning_rate} ({t.lr_scheduler}, {t.optimizer_type})"),
        ("batch size", str(t.batch_size)),
        ("mixed precision", md.get("ss_mixed_precision", t.mixed_precision)),
        ("seed", str(t.seed)),
    ]
    trigger = ", ".join(words) if words else "(none: the LoRA was trained without a trigger word)"
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        f"A {family} LoRA trained with [lorarun](https://github.com/lorarun/lorarun) on `{base}`.",
        "",
        f"**Trigger words:** `{trigger}`",
        "",
        "## Training settings",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in settings],
        "",
        "## How to use it",
        "",
        f"- **ComfyUI**: put `{name}.safetensors` in `models/loras` and load it with a *LoraLoader* node.",
        f"- **AUTOMATIC1111 / Forge**: put it in `models/Lora` and add `<lora:{name}:0.8>` to the prompt.",
        "- **diffusers**:",
        "",
        "```python",
        _diffusers_snippet(family, hub_base or base, repo_id, name, words),
        "```",
        "",
    ]
    if grid:
        lines += ["## Strength × seed grid", "", f"![grid]({grid})", ""]
    if samples:
        lines += ["## Samples", ""]
        for path, prompt in samples:
            lines += [f"![{prompt}]({path})", "", f"*{prompt}*", ""]
    return "\n".join(lines)


def _diffusers_snippet(family: str, base: str, repo_id: str, name: str, words) -> str:
    pipeline = {"sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline"}.get(family, "StableDiffusionPipeline")
    prompt = (", ".join(words) + ", " if words else "") + "a portrait"
    return "\n".join(
        [
            "import torch",
            f"from diffusers import {pipeline}",
            "",
            f'pipe = {pipeline}.from_pretrained("{base}", torch_dtype=torch.float16).to("cuda")',
            f'pipe.load_lora_weights("{repo_id}", weight_name="{name}.safetensors")',
            f'image = pipe("{prompt}").images[0]',
        ]
    )
