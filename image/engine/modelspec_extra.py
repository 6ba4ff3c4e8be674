"""ModelSpec keys sd-scripts writes that lorarun's base metadata (save.py) did not, checked against sd-scripts'
own writer (library/sai_model_spec.py `build_metadata_dataclass`, train_util `get_sai_model_spec_dataclass`,
commit 10bfcb9a; tests/image/engine/sai_model_spec_reference.py transcribes it):

- `modelspec.trigger_phrase` (kohya's `--metadata_trigger_phrase`): the words that call the LoRA up. lorarun knows
  them: the caption trigger when captions were made with one, else each kohya folder's class tokens
  (`10_mychar` → `mychar`), the words kohya itself falls back to. Civitai and the Hub read it as trigger words.
- `modelspec.timestep_range`: "min,max" when a timestep range was trained (kohya: min 0, max 1000 by default).
- `modelspec.implementation_version`: kohya writes `sd-scripts/<commit>`; lorarun writes `lorarun/<version>`.
"""

from __future__ import annotations


def trigger_phrase(cfg, dataset_dirs: dict) -> str:
    d = cfg.dataset
    if d.captions != "given" and d.caption_trigger is not None:
        return d.caption_trigger.strip()
    words = []
    for folder in dataset_dirs:
        prefix, _, tokens = str(folder).partition("_")
        word = tokens.strip() if prefix.isdigit() else str(folder)
        if word and word not in words:
            words.append(word)
    return ", ".join(words)


def modelspec_additions(cfg, dataset_dirs: dict) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("lorarun")
    except PackageNotFoundError:
        ours = "unknown"
    extra = {"modelspec.implementation_version": f"lorarun/{ours}"}
    t = cfg.training
    if t.min_timestep is not None or t.max_timestep is not None:
        low = 0 if t.min_timestep is None else t.min_timestep
        high = 1000 if t.max_timestep is None else t.max_timestep
        extra["modelspec.timestep_range"] = f"{low},{high}"
    phrase = trigger_phrase(cfg, dataset_dirs)
    if phrase:
        extra["modelspec.trigger_phrase"] = phrase
    return extra
