"""Built-in tiny captioners (`builtin:tiny-blip`, `builtin:tiny-florence2`) for tests and offline runs: the real
transformers classes (BlipForConditionalGeneration, Florence2ForConditionalGeneration) and processors, built from
small configs with deterministic random weights and a tokenizer written offline. Their captions are random words
from a small vocabulary: they prove the path (processor → generate → decode → caption file), not the quality.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

TINY_SEED = 20261205
WORDS = (
    "a photo of the person cat dog red blue green smiling portrait with hat in on standing sitting "
    "light dark background face woman man close up"
).split()
IMAGE_SIZE = 32


def build_tiny(kind: str):
    """(model, processor) of `kind` (blip | florence2), in eval mode on the CPU."""
    import torch

    torch.manual_seed(TINY_SEED)
    with tempfile.TemporaryDirectory(prefix="lorarun-tiny-captioner-") as tmp:
        model, processor = (_blip if kind == "blip" else _florence2)(Path(tmp))
    return model.eval(), processor


def _blip(folder: Path):
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip import BlipImageProcessorPil

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    # BLIP decodes from [DEC] (the real checkpoint's bos_token_id 30522) and stops at [SEP].
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=2,
            encoder_hidden_size=32,
            bos_token_id=tokenizer.bos_token_id,
            sep_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
            max_position_embeddings=64,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=2,
            image_size=IMAGE_SIZE,
            patch_size=8,
        ),
    )
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return BlipForConditionalGeneration(config), BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _florence2(folder: Path):
    from transformers import BartTokenizer, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor
    from transformers.models.clip import CLIPImageProcessorPil

    # A byte-level BPE vocabulary without merges: every word of WORDS is one token ("Ġ" marks a leading space),
    # single letters cover the task prompt ("What does the image describe?").
    vocab: dict[str, int] = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    for word in WORDS:
        vocab.setdefault("Ġ" + word, len(vocab))
    for ch in "abcdefghijklmnopqrstuvwxyzWĠ?":
        vocab.setdefault(ch, len(vocab))
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = BartTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), extra_special_tokens={"image_token": "<image>"}
    )
    config = Florence2Config(
        text_config=dict(
            model_type="bart",
            vocab_size=len(tokenizer),
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=128,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            decoder_start_token_id=tokenizer.eos_token_id,  # BART starts decoding from </s>, as Florence-2 does
            forced_bos_token_id=tokenizer.bos_token_id,
        ),
        # DaViT with two stages: 32 px → 8×8 → 4×4 = 16 patch features, plus the pooled one the projector adds.
        vision_config=dict(
            depths=[1, 1],
            patch_size=[7, 3],
            patch_stride=[4, 2],
            patch_padding=[3, 1],
            patch_prenorm=[False, True],
            embed_dim=[16, 32],
            num_heads=[2, 2],
            num_groups=[2, 2],
            window_size=2,
            projection_dim=32,
            max_position_embeddings=16,
            max_temporal_embeddings=4,
        ),
        image_token_id=tokenizer.image_token_id,
    )
    image_processor = CLIPImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False, image_seq_length=17
    )
    image_processor.image_seq_length = 17
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return Florence2ForConditionalGeneration(config), processor


# builtin:tiny-wd14: a WD14-shaped tagger (NHWC BGR 0-255 in, one sigmoid per selected_tags.csv row out) whose tags
# follow the image's colours, so a test can say which tags an image must get. Built with the `onnx` package (the
# dev extra; the image does not need it) and run by onnxruntime exactly as the real model file is.
TINY_WD14_TAGS = (  # (name, category, bias, weight on B, G, R of the mean colour in 0..1)
    ("general", "9", 2.0, (0, 0, 0)),
    ("sensitive", "9", -2.0, (0, 0, 0)),
    ("questionable", "9", -3.0, (0, 0, 0)),
    ("explicit", "9", -4.0, (0, 0, 0)),
    ("1girl", "0", 4.0, (0, 0, 0)),  # always, p 0.98
    ("solo", "0", 2.0, (0, 0, 0)),  # always, p 0.88
    ("^_^", "0", 0.5, (0, 0, 0)),  # always, p 0.62: a short tag keeps its underscore
    ("simple_background", "0", -1.0, (0, 0, 0)),  # p 0.27: under the general threshold
    ("red_theme", "0", -6.0, (0, 0, 12)),
    ("green_theme", "0", -6.0, (0, 12, 0)),
    ("blue_theme", "0", -6.0, (12, 0, 0)),
    ("hatsune_miku", "4", -6.0, (14, 0, 0)),  # a character, for blue images
    ("tiny_(lorarun)", "4", 1.0, (0, 0, 0)),  # p 0.73: a general tag would pass, a character must not
)
TINY_WD14_SIZE = 32
_tiny_wd14_folder: Path | None = None


def build_tiny_wd14() -> Path:
    """A folder with `model.onnx` and `selected_tags.csv`, made once per process."""
    global _tiny_wd14_folder
    if _tiny_wd14_folder is not None and (_tiny_wd14_folder / "model.onnx").is_file():
        return _tiny_wd14_folder
    try:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper, save
    except ImportError:
        raise OSError("builtin:tiny-wd14 is built with the `onnx` package (pip install onnx)") from None
    folder = Path(tempfile.mkdtemp(prefix="lorarun-tiny-wd14-"))
    weights = np.array([w for *_, w in TINY_WD14_TAGS], dtype=np.float32).T / 255.0  # (3, tags), input 0..255
    bias = np.array([b for _, _, b, _ in TINY_WD14_TAGS], dtype=np.float32)
    s = TINY_WD14_SIZE
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["mean", "weights"], ["logits_nobias"]),
            helper.make_node("Add", ["logits_nobias", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["output"]),
        ],
        "tiny_wd14",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", s, s, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(TINY_WD14_TAGS)])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what every onnxruntime since 1.14 reads
    save(model, str(folder / "model.onnx"))
    rows = ["tag_id,name,category,count"] + [f"{i},{n},{c},1" for i, (n, c, _, _) in enumerate(TINY_WD14_TAGS)]
    (folder / "selected_tags.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    _tiny_wd14_folder = folder
    return folder
