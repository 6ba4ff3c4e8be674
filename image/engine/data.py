"""Dataset, caching and batching: kohya's folder layout (scanned once by `dataset_scan`), repeats, regularisation
images, aspect buckets with one bucket per batch, caption shuffle/keep_tokens/dropout, flip augmentation.

Latents (and, with flip_aug, the flipped latents — kohya's `latents_flipped`) and text embeddings are computed once
and kept on disk under `<work_dir>/cache/`, keyed by the model and the exact input, so a resumed or repeated run
skips the VAE and text encoders entirely.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from lorarun.image.dataset_scan import FLATTEN_BACKGROUND, DatasetScan, has_transparency
from lorarun.image.engine.embedding_cache import cache_key, cache_per_caption, save_atomic

Reso = tuple[int, int]


@dataclass(frozen=True)
class Item:
    index: int
    path: Path
    caption: str
    size: Reso  # original (width, height)
    bucket: Reso  # training (width, height)
    is_reg: bool
    subset: str


def items_from_scan(scan: DatasetScan, train_root: Path, reg_root: Path | None) -> list[Item]:
    items = []
    for subset in scan.subsets:
        root = reg_root if subset.is_reg else train_root
        for image in subset.images:
            items.append(
                Item(
                    len(items), root / image.path, image.caption, image.size, image.bucket, subset.is_reg, subset.folder
                )
            )
    return items


def epoch_samples(scan: DatasetScan, items: list[Item]) -> list[int]:
    """Item indices for one epoch: each training image `repeats` times; regularisation images cycled until they
    match the number of training samples (one pass at the folder's repeats, then one each, round-robin) — the same
    rule as `dataset_scan._reg_fill`, so step counts agree with the controller's estimate.
    `items` must come from `items_from_scan(scan, …)` (same order: subsets, then their images)."""
    first_index, start = [], 0
    for subset in scan.subsets:
        first_index.append(start)
        start += len(subset.images)
    assert start == len(items), "items do not come from this scan"
    samples: list[int] = []
    reg: list[tuple[int, int]] = []
    for subset, first in zip(scan.subsets, first_index):
        for k in range(len(subset.images)):
            if subset.is_reg:
                reg.append((first + k, subset.repeats))
            else:
                samples += [first + k] * subset.repeats
    num_train = len(samples)
    n, first_loop = 0, True
    while reg and n < num_train:
        for index, repeats in reg:
            add = repeats if first_loop else 1
            samples += [index] * add
            n += add
            if n >= num_train:
                break
        first_loop = False
    return samples


def epoch_batches(samples: list[int], items: list[Item], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """kohya's BucketManager: shuffle inside each bucket, cut into batches of one bucket, shuffle the batches.
    Deterministic in (seed, epoch), so a resumed run replays the same order and skips what it already did."""
    rng = random.Random(seed * 1_000_003 + epoch)
    buckets: dict[Reso, list[int]] = {}
    for index in samples:
        buckets.setdefault(items[index].bucket, []).append(index)
    batches = []
    for bucket in sorted(buckets):
        members = buckets[bucket]
        rng.shuffle(members)
        batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    rng.shuffle(batches)
    return batches


def shard_batches(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """Data-parallel split: every rank gets the same number of batches (padding by wrapping around, as
    DistributedSampler does), or the collective ops in backward would wait forever on the rank with fewer."""
    if world == 1:
        return batches
    per_rank = math.ceil(len(batches) / world)
    padded = batches + batches[: per_rank * world - len(batches)]
    return padded[rank::world]


def process_caption(
    caption: str,
    rng: random.Random,
    *,
    shuffle: bool,
    keep_tokens: int,
    dropout_rate: float,
    tag_dropout_rate: float = 0.0,
    keep_tokens_separator: str = "",
) -> str:
    """kohya `BaseDataset.process_caption` (train_util.py), the parts lorarun supports, in kohya's order: drop the
    whole caption with `caption_dropout_rate`; else, when shuffling or tag dropout is on, split the comma-separated
    tags into kept ones (the first `keep_tokens`, or everything before `keep_tokens_separator` — and after a second
    separator, a kept suffix) and the rest; shuffle the rest, drop each of them with `caption_tag_dropout_rate`,
    join with ", ". As in kohya, with neither shuffle nor tag dropout the caption (separator included) is unchanged.
    `rng` stands in for kohya's module-level `random`, drawn in the same order."""
    if dropout_rate > 0 and rng.random() < dropout_rate:
        return ""
    if not (shuffle or tag_dropout_rate > 0):
        return caption
    fixed, flex, suffix = [], [], []
    if keep_tokens_separator and keep_tokens_separator in caption:
        fixed_part, flex_part = caption.split(keep_tokens_separator, 1)
        if keep_tokens_separator in flex_part:
            flex_part, suffix_part = flex_part.split(keep_tokens_separator, 1)
            suffix = [t.strip() for t in suffix_part.split(",") if t.strip()]
        fixed = [t.strip() for t in fixed_part.split(",") if t.strip()]
        flex = [t.strip() for t in flex_part.split(",") if t.strip()]
    else:
        tokens = [t.strip() for t in caption.strip().split(",")]
        flex = tokens[:]
        if keep_tokens > 0:
            fixed, flex = flex[:keep_tokens], tokens[keep_tokens:]
    if shuffle:
        rng.shuffle(flex)
    if tag_dropout_rate > 0:
        flex = [t for t in flex if rng.random() >= tag_dropout_rate]
    return ", ".join(fixed + flex + suffix)


def caption_options(d) -> dict:
    """process_caption's keyword arguments from a DatasetConfig."""
    return dict(
        shuffle=d.shuffle_caption,
        keep_tokens=d.keep_tokens,
        dropout_rate=d.caption_dropout_rate,
        tag_dropout_rate=d.caption_tag_dropout_rate,
        keep_tokens_separator=d.keep_tokens_separator,
    )


def flatten_to_rgb(im: Image.Image) -> Image.Image:
    """RGB with transparent pixels composited onto the stated background (the scan warns about each folder)."""
    if not has_transparency(im):
        return im.convert("RGB")
    background = Image.new("RGBA", im.size, FLATTEN_BACKGROUND + (255,))
    return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")


def load_image(path: Path, bucket: Reso) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize to cover the bucket (area-like downscale, lanczos up) and centre-crop, as kohya without random_crop.
    Returns a (3, H, W) tensor in [-1, 1] and the crop's (top, left) for SDXL's size conditioning."""
    bw, bh = bucket
    with Image.open(path) as im:
        im = flatten_to_rgb(im)
        w, h = im.size
        scale = max(bw / w, bh / h)
        rw, rh = max(bw, round(w * scale)), max(bh, round(h * scale))
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.LANCZOS
        im = im.resize((rw, rh), resample)
        top, left = (rh - bh) // 2, (rw - bw) // 2
        im = im.crop((left, top, left + bw, top + bh))
        data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(bh, bw, 3)
    return data.permute(2, 0, 1).float().div(127.5).sub(1.0), (top, left)


@dataclass
class LatentEntry:
    latents: torch.Tensor  # (4, h, w), already multiplied by the VAE scaling factor
    flipped: torch.Tensor | None
    crop: tuple[int, int]


def cache_latents(
    items: list[Item],
    vae,
    model_key: str,
    cache_dir: Path,
    *,
    flip: bool,
    device,
    dtype,
    batch_size: int = 4,
    write: bool = True,
    progress=None,
) -> dict[int, LatentEntry]:
    """Encode every image once (flip-aware) and keep the result on disk; reuse what a previous run stored.
    `write=False` (non-main ranks) only reads, after the main rank has written everything."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    scale = float(vae.config.scaling_factor)
    out: dict[int, LatentEntry] = {}
    todo: dict[Reso, list[tuple[Item, Path]]] = {}
    for item in items:
        stat = item.path.stat()
        file = (
            cache_dir
            / f"{cache_key(model_key, item.path.resolve(), stat.st_size, stat.st_mtime_ns, item.bucket, flip)}.safetensors"
        )
        if file.exists():
            data = load_file(str(file))
            out[item.index] = LatentEntry(
                data["latents"], data.get("latents_flipped"), tuple(int(x) for x in data["crop"].tolist())
            )
        else:
            todo.setdefault(item.bucket, []).append((item, file))
    if todo and not write:
        raise RuntimeError("latent cache incomplete on a non-main rank")
    done = 0
    total = sum(len(v) for v in todo.values())
    generator = torch.Generator("cpu").manual_seed(0)  # latents are samples of the VAE posterior: make them fixed
    for bucket, entries in sorted(todo.items()):
        for start in range(0, len(entries), batch_size):
            chunk = entries[start : start + batch_size]
            pixels, crops = zip(*(load_image(item.path, bucket) for item, _ in chunk))
            batch = torch.stack(pixels)
            flips = [None] * len(chunk)
            with torch.no_grad():
                lat = _encode(vae, batch, generator, device, dtype) * scale
                if flip:
                    flips = list(_encode(vae, batch.flip(-1), generator, device, dtype) * scale)
            for (item, file), latents, flipped, crop in zip(chunk, lat, flips, crops):
                tensors = {"latents": latents.contiguous(), "crop": torch.tensor(crop)}
                if flipped is not None:
                    tensors["latents_flipped"] = flipped.contiguous()
                save_atomic(tensors, file)
                out[item.index] = LatentEntry(latents, flipped, crop)
            done += len(chunk)
            if progress:
                progress(done, total)
    return out


def _encode(vae, pixels: torch.Tensor, generator, device, dtype) -> torch.Tensor:
    dist = vae.encode(pixels.to(device, dtype)).latent_dist
    noise = torch.randn(dist.mean.shape, generator=generator).to(dist.mean.device, dist.mean.dtype)
    return (dist.mean + dist.std * noise).float().cpu()


# --- text ---------------------------------------------------------------------------------------------------------


@dataclass
class TextEmbeds:
    hidden: torch.Tensor  # (B, 77, D): SD1.5 → CLIP-L; SDXL → concat(CLIP-L, CLIP-G) penultimate layers
    pooled: torch.Tensor | None  # SDXL: CLIP-G projected pooled output (B, D2)


def tokenize(tokenizers: list, captions: list[str]) -> list[torch.Tensor]:
    return [
        tok(
            captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        for tok in tokenizers
    ]


def encode_text(family: str, text_encoders: list, token_ids: list[torch.Tensor], clip_skip: int, device) -> TextEmbeds:
    """SD1.5: last layer, or layer -clip_skip followed by the final layer norm (kohya / A1111 clip skip).
    SDXL: penultimate layer of both encoders, concatenated; pooled = CLIP-G projection (as kohya and diffusers).
    The encoders may be DDP-wrapped (text-encoder training), hence `device` is passed and not read off them."""
    from lorarun.image.engine.lora import unwrap

    if family == "sdxl":
        hidden, pooled = [], None
        for encoder, ids in zip(text_encoders, token_ids):
            out = encoder(ids.to(device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            if hasattr(out, "text_embeds"):
                pooled = out.text_embeds
        return TextEmbeds(torch.cat(hidden, dim=-1), pooled)
    encoder = text_encoders[0]
    out = encoder(token_ids[0].to(device), output_hidden_states=clip_skip > 1)
    if clip_skip > 1:
        base = unwrap(encoder)
        base = getattr(base, "text_model", base)  # transformers < 5 nests the layers under text_model
        hidden = base.final_layer_norm(out.hidden_states[-clip_skip])
    else:
        hidden = out.last_hidden_state
    return TextEmbeds(hidden, None)


def cache_text(
    captions: list[str],
    family: str,
    tokenizers: list,
    text_encoders: list,
    clip_skip: int,
    model_key: str,
    cache_dir: Path,
    device,
    *,
    write: bool = True,
    batch_size: int = 16,
    progress=None,
) -> dict[str, TextEmbeds]:
    """One embedding per distinct caption, on disk (embedding_cache.py); returns caption → embeds (batch dim 1, on
    the CPU). `progress(done, total)` after each batch encoded (the controller shows "caching captions N/M")."""

    def encode(chunk: list[str]) -> list[dict[str, torch.Tensor]]:
        emb = encode_text(family, text_encoders, tokenize(tokenizers, chunk), clip_skip, device)
        out = []
        for i in range(len(chunk)):
            tensors = {"hidden": emb.hidden[i : i + 1].float().cpu().contiguous()}
            if emb.pooled is not None:
                tensors["pooled"] = emb.pooled[i : i + 1].float().cpu().contiguous()
            out.append(tensors)
        return out

    cached = cache_per_caption(
        captions,
        cache_dir,
        lambda caption: cache_key(model_key, clip_skip, caption),
        encode,
        write=write,
        batch_size=batch_size,
        progress=progress,
    )
    return {caption: TextEmbeds(t["hidden"], t.get("pooled")) for caption, t in cached.items()}


# --- batches ------------------------------------------------------------------------------------------------------


@dataclass
class Batch:
    latents: torch.Tensor  # (B, 4, h, w)
    captions: list[str]
    loss_weight: torch.Tensor  # (B,) prior_loss_weight for regularisation images, 1 otherwise
    time_ids: torch.Tensor | None  # SDXL (B, 6): original size, crop top-left, target size — all (h, w)


def make_batch(
    indices: list[int],
    items: list[Item],
    latents: dict[int, LatentEntry],
    rng: random.Random,
    *,
    flip_aug: bool,
    prior_loss_weight: float,
    caption_opts: dict,
    sdxl: bool,
) -> Batch:
    lats, captions, weights, time_ids = [], [], [], []
    for index in indices:
        item, entry = items[index], latents[index]
        flipped = flip_aug and entry.flipped is not None and rng.random() < 0.5
        lats.append(entry.flipped if flipped else entry.latents)
        captions.append(process_caption(item.caption, rng, **caption_opts))
        weights.append(prior_loss_weight if item.is_reg else 1.0)
        if sdxl:
            w, h = item.size
            top, left = entry.crop
            bw, bh = item.bucket
            time_ids.append([h, w, top, left, bh, bw])
    return Batch(
        torch.stack(lats),
        captions,
        torch.tensor(weights),
        torch.tensor(time_ids, dtype=torch.float32) if sdxl else None,
    )


def describe(scan: DatasetScan) -> dict:
    """The kohya metadata views of the dataset: dirs, tag frequency, buckets."""
    dirs, reg_dirs, tags = {}, {}, {}
    for subset in scan.subsets:
        (reg_dirs if subset.is_reg else dirs)[subset.folder] = {
            "n_repeats": subset.repeats,
            "img_count": len(subset.images),
        }
        if not subset.is_reg:
            counter: Counter[str] = Counter()
            for image in subset.images:
                # kohya lower-cases each tag (train_util BaseDataset.set_tag_frequency)
                counter.update(t.strip().lower() for t in image.caption.split(",") if t.strip())
            tags[subset.folder] = dict(counter)
    buckets = {
        str(i): {"resolution": list(reso), "count": n}
        for i, (reso, n) in enumerate(sorted(scan.bucket_counts().items()))
    }
    return {
        "dataset_dirs": dirs,
        "reg_dataset_dirs": reg_dirs,
        "tag_frequency": tags,
        "bucket_info": {"buckets": buckets},
    }
