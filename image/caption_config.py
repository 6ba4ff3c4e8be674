"""Captioning on the instance (issue 20): which captioning models lorarun knows, and the checks of the job's
`dataset.captions*` fields. Torch-free: the laptop reads it for validate and the estimate, the engine to load.

`dataset.captions`: `given` (the default: captions files as they are; kohya's class tokens where none), `auto`
(before training, on the same rental, a caption is written for each image without one), `only` (caption and stop,
no training: what `lorarun caption` submits).
"""

from __future__ import annotations

from dataclasses import dataclass

CAPTION_MODES = ("given", "auto", "only")


@dataclass(frozen=True)
class CaptionModel:
    name: str
    repo_id: str  # the Hub repository the instance downloads (built-in tiny models are built from configs)
    kind: str  # blip | florence2: which transformers class loads it; wd14: a tagger through onnxruntime
    download_gb: float  # weights the instance downloads (assumed from the Hub's file list; 0 for built-in)
    seconds_per_image: float  # on a 24 GB consumer GPU in fp16 (assumed, not yet measured), model loaded
    task: str = ""  # Florence-2's task prompt


# Florence-2 through transformers' native Florence2ForConditionalGeneration (transformers ≥ 4.56 reads the
# florence-community conversions; microsoft/Florence-2-* need trust_remote_code, which lorarun never sets).
# BLIP large is what kohya's finetune/make_captions.py uses. The WD14 tagger is SmilingWolf's wd-vit-tagger-v3 (the
# v3 ViT: model.onnx of 379 MB + selected_tags.csv), run through onnxruntime as kohya's
# finetune/tag_images_by_wd14_tagger.py --onnx does; it writes Danbooru tags ("1girl, solo, smile"), what anime
# and character LoRA guides train on.
CAPTION_MODELS: dict[str, CaptionModel] = {
    "florence2": CaptionModel(
        "florence2", "florence-community/Florence-2-large", "florence2", 1.6, 0.45, "<DETAILED_CAPTION>"
    ),
    "florence2-base": CaptionModel(
        "florence2-base", "florence-community/Florence-2-base", "florence2", 0.5, 0.25, "<DETAILED_CAPTION>"
    ),
    "blip": CaptionModel("blip", "Salesforce/blip-image-captioning-large", "blip", 1.9, 0.2),
    "wd14": CaptionModel("wd14", "SmilingWolf/wd-vit-tagger-v3", "wd14", 0.38, 0.02),
    "builtin:tiny-blip": CaptionModel("builtin:tiny-blip", "", "blip", 0.0, 0.05),
    "builtin:tiny-wd14": CaptionModel("builtin:tiny-wd14", "", "wd14", 0.0, 0.01),
    "builtin:tiny-florence2": CaptionModel("builtin:tiny-florence2", "", "florence2", 0.0, 0.1, "<CAPTION>"),
}
NOT_YET: dict[str, str] = {}  # a model named but not offered yet → why


def caption_model(name: str) -> CaptionModel:
    return CAPTION_MODELS[name]


def caption_problems(captions: str, model: str, trigger: str | None, where: str = "dataset") -> list[str]:
    problems = []
    if captions not in CAPTION_MODES:
        problems.append(f"{where}.captions: unknown mode {captions!r}; use given, auto or only")
    if model in NOT_YET:
        problems.append(
            f"{where}.caption_model: {model} is not supported yet ({NOT_YET[model]}); use florence2, blip or wd14"
        )
    elif model not in CAPTION_MODELS:
        known = ", ".join(n for n in CAPTION_MODELS if not n.startswith("builtin:"))
        problems.append(f"{where}.caption_model: unknown model {model!r}; use one of {known}")
    if trigger is not None and ("\n" in trigger or len(trigger) > 200):
        problems.append(f"{where}.caption_trigger: one short line of words, e.g. 'ohwx person'")
    return problems
