"""Load a captioning model and caption images with it, through transformers' own classes.

- BLIP (`BlipForConditionalGeneration` + `BlipProcessor`): unconditional captioning with beam search and
  kohya's finetune/make_captions.py lengths (min 5, max 75 tokens), deterministic so a rerun gives the same text;
- Florence-2 (`Florence2ForConditionalGeneration` + `Florence2Processor`, native since transformers 4.56): the
  task prompt (`<DETAILED_CAPTION>`) in, the decoded text out.
- the WD14 tagger (`kind` wd14): Danbooru tags through onnxruntime (wd14.py).
The weights download on the instance (the Hub's cache); the built-in tiny ones are built from configs (tiny.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lorarun.image.caption_config import CaptionModel


@dataclass
class Captioner:
    spec: CaptionModel
    model: Any
    processor: Any
    device: Any
    dtype: Any
    max_new_tokens: int = 75

    def caption(self, images: list) -> list[str]:
        """One caption per PIL image, whitespace collapsed."""
        import torch

        with torch.inference_mode():
            if self.spec.kind == "florence2":
                texts = self._florence2(images)
            else:
                texts = self._blip(images)
        return [" ".join(t.replace("<pad>", " ").split()) for t in texts]

    def _inputs(self, **kwargs):
        inputs = self.processor(return_tensors="pt", **kwargs)
        return {
            k: (v.to(self.device, self.dtype) if k == "pixel_values" else v.to(self.device)) for k, v in inputs.items()
        }

    def _blip(self, images: list) -> list[str]:
        inputs = self._inputs(images=images)
        out = self.model.generate(**inputs, num_beams=3, min_new_tokens=5, max_new_tokens=self.max_new_tokens)
        return self.processor.batch_decode(out, skip_special_tokens=True)

    def _florence2(self, images: list) -> list[str]:
        task = self.spec.task or "<CAPTION>"
        inputs = self._inputs(images=images, text=[task] * len(images))
        out = self.model.generate(
            **inputs, num_beams=3, do_sample=False, min_new_tokens=3, max_new_tokens=self.max_new_tokens
        )
        # Caption tasks are "pure_text" in Florence2Processor's post-processing table: the decoded text without its
        # special tokens, which is what batch_decode gives (post_process_generation needs the checkpoint's parser
        # config for nothing more here).
        return self.processor.batch_decode(out, skip_special_tokens=True)


def load_captioner(spec: CaptionModel, device: str = "auto") -> Captioner:
    """The model on the best device here: CUDA in fp16 when there is one (and `device` allows), else the CPU in
    fp32."""
    import torch

    if spec.kind == "wd14":  # a tagger, through onnxruntime (wd14.py)
        from lorarun.image.engine.caption.wd14 import load_tagger

        return load_tagger(spec, device)  # type: ignore[return-value]  # the same face: caption, device, model
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device("cuda" if use_cuda else "cpu")
    dtype = torch.float16 if use_cuda else torch.float32
    if spec.name.startswith("builtin:"):
        from lorarun.image.engine.caption.tiny import build_tiny

        model, processor = build_tiny(spec.kind)
        return Captioner(spec, model.to(dev, dtype), processor, dev, dtype, max_new_tokens=12)
    if spec.kind == "florence2":
        from transformers import Florence2ForConditionalGeneration as ModelClass
        from transformers import Florence2Processor as ProcessorClass
    else:
        from transformers import BlipForConditionalGeneration as ModelClass
        from transformers import BlipProcessor as ProcessorClass
    processor = ProcessorClass.from_pretrained(spec.repo_id)
    model = ModelClass.from_pretrained(spec.repo_id, dtype=dtype).to(dev).eval()
    return Captioner(spec, model, processor, dev, dtype)
