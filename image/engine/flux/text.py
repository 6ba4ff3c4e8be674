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

from lorarun.image.engine.embedding_cache import cache_key, cache_per_caption


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
    progress=None,
) -> dict[str, FluxText]:
    """SD's caption cache (embedding_cache.py) with Flux's encoders and tensors; returns caption → FluxText."""

    def encode_chunk(chunk: list[str]) -> list[dict[str, torch.Tensor]]:
        return [
            {"t5": e.t5.contiguous(), "pooled": e.pooled.contiguous(), "mask": e.mask.contiguous()}
            for e in encode(chunk, tokenizers, encoders, t5_tokens, device)
        ]

    cached = cache_per_caption(
        captions,
        cache_dir,
        lambda caption: cache_key("flux", model_key, t5_tokens, caption),
        encode_chunk,
        write=write,
        batch_size=batch_size,
        progress=progress,
    )
    return {caption: FluxText(t["t5"], t["pooled"], t["mask"]) for caption, t in cached.items()}
