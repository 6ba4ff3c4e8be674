"""The report's "what was trained and how to use it" part: the training settings that matter, read from the LoRA
file's own kohya metadata (ss_*: what the file really carries, not what was asked for) and the engine's `started`
event (family, base model), and how to load the file in ComfyUI, AUTOMATIC1111/Forge and diffusers (the same
instructions the Hub model card gives: runner/publish/model_card.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

STRENGTH = 0.8  # a usual starting strength for a character LoRA; the grid shows the others

_PIPELINES = {"sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline"}


def _lora_file(output_dir: Path, files: Sequence[Mapping[str, Any]]) -> Path | None:
    """The final LoRA when it came home, else the newest checkpoint."""
    loras = [f for f in files if str(f.get("path", "")).endswith(".safetensors") and f.get("kind") != "sample"]
    final = [f for f in loras if f.get("kind") == "final"]
    chosen = (final or loras[-1:])[:1]
    path = output_dir / str(chosen[0]["path"]) if chosen else None
    return path if path is not None and path.is_file() else None


def _metadata(path: Path) -> dict[str, str]:
    try:
        from lorarun.runner.publish.model_card import read_lora_metadata

        return read_lora_metadata(path)
    except Exception:  # not loadable here: the verification table says why; the guide just has less to say
        return {}


def training_guide(output_dir: Path, files: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]):
    """{"lora", "settings": [[name, value]…], "usage": [[tool, how]…], "diffusers": code} or None (no LoRA home)."""
    path = _lora_file(Path(output_dir), files)
    if path is None:
        return None
    md = _metadata(path)
    started = next((e for e in events if e.get("event") == "started"), {})
    family = str(started.get("family") or ("sdxl" if "xl" in md.get("modelspec.architecture", "") else "sd15"))
    base = str(started.get("base") or md.get("ss_sd_model_name") or "?")

    def m(key: str, default: str = "?") -> str:
        value = md.get(key)
        return default if value in (None, "", "None") else str(value)

    lr = m("ss_unet_lr", m("ss_learning_rate"))
    settings = [
        ("base model", f"{base} ({family})"),
        ("network", f"LoRA dim {m('ss_network_dim')}, alpha {m('ss_network_alpha')}"),
        ("learning rate", f"UNet {lr}, text encoder {m('ss_text_encoder_lr', 'not trained')}"),
        ("schedule", f"{m('ss_lr_scheduler')}, warm-up {m('ss_lr_warmup_steps', '0')} step(s)"),
        ("optimizer", m("ss_optimizer")),
        ("steps", f"{m('ss_steps')} of {m('ss_max_train_steps')} ({m('ss_num_epochs')} epochs)"),
        ("batch", f"{m('ss_batch_size_per_device')} × accumulation {m('ss_gradient_accumulation_steps', '1')}"),
        ("resolution", m("ss_resolution", m("modelspec.resolution"))),
        ("precision", f"{m('ss_mixed_precision')} training, saved as {path.name}"),
        ("seed", m("ss_seed")),
    ]
    name = path.stem
    node = "LoraLoaderModelOnly" if family == "flux" else "LoraLoader"
    usage = [
        (
            "ComfyUI",
            f"copy {path.name} to ComfyUI/models/loras and add a {node} node after the checkpoint loader "
            f"(strength {STRENGTH})",
        ),
        ("AUTOMATIC1111 / Forge", f"copy {path.name} to models/Lora and add <lora:{name}:{STRENGTH}> to the prompt"),
        ("diffusers", "load_lora_weights reads kohya files as they are (below)"),
    ]
    pipeline = _PIPELINES.get(family, "StableDiffusionPipeline")
    code = "\n".join(
        [
            "import torch",
            f"from diffusers import {pipeline}",
            "",
            f'pipe = {pipeline}.from_pretrained("{base}", torch_dtype=torch.float16).to("cuda")',
            f'pipe.load_lora_weights("{path.parent}", weight_name="{path.name}", adapter_name="{name}")',
            f'pipe.set_adapters(["{name}"], adapter_weights=[{STRENGTH}])',
            'image = pipe("your prompt").images[0]',
        ]
    )
    return {
        "lora": path.name,
        "settings": [list(s) for s in settings],
        "usage": [list(u) for u in usage],
        "diffusers": code,
    }


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|")


def guide_markdown(guide: Mapping[str, Any] | None) -> list[str]:
    if not guide:
        return []
    lines = ["", "## Training settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {_md(v)} |" for k, v in guide["settings"]]
    lines += ["", f"## Using {guide['lora']}", ""]
    lines += [f"- **{tool}**: {how}" for tool, how in guide["usage"]]
    return lines + ["", "```python", guide["diffusers"], "```"]


def guide_html(guide: Mapping[str, Any] | None) -> str:
    if not guide:
        return ""
    import html

    e = html.escape
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in guide["settings"])
    usage = "".join(f"<li><b>{e(tool)}</b>: {e(how)}</li>" for tool, how in guide["usage"])
    return (
        f"<h2>Training settings</h2><table>{rows}</table><h2>Using {e(guide['lora'])}</h2><ul>{usage}</ul>"
        f"<pre><code>{e(guide['diffusers'])}</code></pre>"
    )
