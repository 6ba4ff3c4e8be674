"""The CLIP tokenizer built offline from the BPE file we ship (engine.md §5.2, Appendix A).

`CLIPTokenizer` needs `vocab.json` + `merges.txt`; both are derived exactly the way OpenAI's/open_clip's
`SimpleTokenizer` builds its vocabulary from `bpe_simple_vocab_16e6.txt.gz`, so no hub access is needed and the
ids match the real SD tokenizers. The two files are written once into a cache folder and reused.
"""

from __future__ import annotations

import gzip
import json
import os
from functools import cache
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BPE_FILE = ASSETS / "clip" / "bpe_simple_vocab_16e6.txt.gz"
MODEL_MAX_LENGTH = 77
VOCAB_SIZE = 49408


def default_cache_dir() -> Path:
    """Where generated assets live: $LORARUN_ASSET_CACHE (the Docker image bakes them there), else ~/.cache."""
    env = os.environ.get("LORARUN_ASSET_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lorarun" / "assets"


@cache
def bytes_to_unicode() -> dict[int, str]:
    """open_clip's / GPT-2's reversible byte → printable-unicode map (copied: open_clip is not a dependency)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def vocab_and_merges(bpe_file: Path = BPE_FILE) -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_file).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    return {t: i for i, t in enumerate(vocab)}, [" ".join(m) for m in merges]


def write_tokenizer_files(folder: Path, pad_token: str = "<|endoftext|>") -> Path:
    """Write a complete `CLIPTokenizer.from_pretrained`-able folder (what a diffusers `tokenizer/` holds)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "tokenizer_config.json"
    if marker.exists():
        return folder
    vocab, merges = vocab_and_merges()
    tmp_suffix = f".tmp{os.getpid()}"
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "special_tokens_map.json": json.dumps(
            {
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": pad_token,
            }
        ),
        # Written last: its presence marks the folder complete (several processes may race here).
        "tokenizer_config.json": json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": MODEL_MAX_LENGTH,
                "do_lower_case": True,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": pad_token,
                "errors": "replace",
                "add_prefix_space": False,
            }
        ),
    }
    for name, text in files.items():
        tmp = folder / (name + tmp_suffix)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / name)
    return folder


def tokenizer_dir(kind: str = "clip_l", cache_dir: Path | None = None) -> Path:
    """`clip_l`: SD1.5 / SDXL tokenizer (pads with <|endoftext|>); `clip_g`: SDXL tokenizer_2 (pads with "!")."""
    pad = {"clip_l": "<|endoftext|>", "clip_g": "!"}[kind]
    return write_tokenizer_files((cache_dir or default_cache_dir()) / "tokenizers" / kind, pad_token=pad)


def load_tokenizer(kind: str = "clip_l", cache_dir: Path | None = None):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(tokenizer_dir(kind, cache_dir)))
