"""The fast training step: the same math as the plain diffusers+peft step (`engine/step.py`), with the LoRA
plumbing that dominates a plain step on a big GPU taken out (baselines.md: thousands of dtype casts, rank-32
matmuls and elementwise kernels around a few large GEMMs). Each lever can be turned off on its own
(`training.fast_step_off`) so that it can be measured (`bench/engine_throughput.py`):

- master_weights: LoRA weights in the base's dtype (bf16) with an fp32 master copy in the optimizer, so no autocast
  casts of fp32 LoRA weights on every call (`master.py`);
- flat_optimizer: LoRA weights and gradients as views into one flat tensor per parameter group, so zeroing,
  clipping, the bf16↔fp32 copies and the optimizer are a handful of kernels, not thousands (`master.py`);
- fused_lora: `W x + b + B((s·A) x)` as three GEMMs with the add inside the last one (`addmm`), no dropout
  identity, no casts, no scaling of the activations (`fused_lora.py`);
- compile: `torch.compile` of the UNet with static shapes, its recompile limit set from the run's bucket shapes,
  so each (batch, bucket) shape compiles once and never again (`compiled.py`);
- cuda_graphs: the compiled UNet replayed as CUDA graphs (`mode="reduce-overhead"`, CUDA only);
- lean_checkpointing: gradient checkpointing only when the memory estimate says the run needs it, and then only
  on every n-th block (`checkpointing.py`).

`setup.prepare_fast` applies them to a UNet with LoRA and returns what the trainer's loop uses.
"""
