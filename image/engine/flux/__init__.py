"""Flux.1 (dev, schnell, Krea-dev) LoRA training: model loading, flow matching, BFL/kohya key names, sampling.

The Flux trainer (`trainer.FluxTrainer`) reuses the SD trainer's loop, resume, events and outputs and replaces what
differs: the model parts, the text conditioning (CLIP-L pooled + T5-XXL), the flow-matching step, the LoRA targets
and the file's key names.
"""
