"""Flux text conditioning: CLIP-L's pooled vector and T5-XXL's hidden states (+ its attention mask), as
FluxPipeline's `_get_clip_prompt_embeds` / `_get_t5_prompt_embeds` compute them, cached on disk per caption.

Caching is always on for Flux: lorarun does not train Flux's text encoders (neither do kohya's defaults for Flux
nor ai-toolkit), so the embeddings of a caption never change and T5-XXL (9 GB in bf16) leaves the GPU before
training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lorarun.image.engine.data import _key


@dataclass
class FluxText:
    t5: torch.Tensor  # (1, L, D)
    pooled: torch.Tensor  # (1, 768)
    mask: torch.Tensor  # (1, L) 1 = real token


def encode(captions: list[str], tokenizers: list, encoders: list, t5_tokens: int, device) -> list[FluxText]:
    clip_tok, t5_tok = tokenizers
    clip, t5 = encoders
    clip_ids = clip_tok(
        captions, padding="max_length", max_length=clip_tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    t5_in = t5_tok(captions, padding="max_length", max_length=t5_tokens, truncation=True, return_tensors="pt")
    with torch.no_grad():
        pooled = clip(clip_ids.to(device), output_hidden_states=False).pooler_output
        hidden = t5(t5_in.input_ids.to(device), output_hidden_states=False)[0]
    return [
        FluxText(
            hidden[i : i + 1].float().cpu(), pooled[i : i + 1].float().cpu(), t5_in.attention_mask[i : i + 1].cpu()
        )
        for i in range(len(captions))
    ]


def cache_text(
    captions: list[str],
    tokenizers: list,
    encoders: list,
    t5_tokens: int,
    model_key: str,
    cache_dir: Path,
    device,
    *,
    write: bool = True,
    batch_size: int = 8,
) -> dict[str, FluxText]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, FluxText] = {}
    todo = []
    for caption in sorted(set(captions)):
        file = cache_dir / f"{_key('flux', model_key, t5_tokens, caption)}.safetensors"
        if file.exists():
            data = load_file(str(file))
            out[caption] = FluxText(data["t5"], data["pooled"], data["mask"])
        else:
            todo.append((caption, file))
    if todo and not write:
        raise RuntimeError("text cache incomplete on a non-main rank")
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        for (caption, file), emb in zip(chunk, encode([c for c, _ in chunk], tokenizers, encoders, t5_tokens, device)):
            tmp = file.with_suffix(".tmp")
            save_file(
                {"t5": emb.t5.contiguous(), "pooled": emb.pooled.contiguous(), "mask": emb.mask.contiguous()}, str(tmp)
            )
            tmp.replace(file)
            out[caption] = emb
    return out
