"""The Flux part of the engine benchmark (`python bench/engine_throughput.py --models flux`): a Flux.1 LoRA training
step on a GPU for each base quantisation — seconds per step, peak memory, and the peak the estimate predicts
(`image/memory.py`), at 512² and 1024². This is also the GPU check of the int8/NF4 paths (CUDA only: the engine
refuses them on a CPU with one line).

The transformer is built from FLUX.1-dev's shipped config with random weights (same shapes and FLOPs; no download),
in bf16, with every linear of the double/single blocks swapped for bitsandbytes' Linear8bitLt / Linear4bit (NF4)
for int8 / nf4 — what `from_pretrained(quantization_config=…)` produces. LoRA rank 16 on the `all` target, fp32 LoRA
weights, AdamW, gradient checkpointing, bf16 autocast, cached-style inputs (random latents, T5 512 tokens): exactly
`lorarun.image.engine.flux.step.flow_loss`, the function the trainer runs.

    python bench/engine_throughput.py --models flux --no-reference          # CUDA: bf16, int8, nf4 at 512 and 1024
    python bench/engine_throughput.py --models flux --flux-quant nf4 --flux-resolutions 1024 --flux-steps 10
    python bench/engine_throughput.py --tiny --models flux                   # CPU smoke check on the tiny Flux
"""

from __future__ import annotations

import json
import time

import torch


def build_transformer(tiny: bool, quant: str, device):
    from diffusers import FluxTransformer2DModel

    if tiny:
        from lorarun.image.engine.flux.tiny import build_tiny_flux

        return build_tiny_flux("dev").transformer.to(device)
    from lorarun.image.engine.flux.models import config_dir

    config = FluxTransformer2DModel.load_config(str(config_dir("dev")), subfolder="transformer")
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    if quant != "bf16":
        _quantise_blocks(model, quant)
    return model.to(device)


def _quantise_blocks(model, quant: str) -> None:
    import bitsandbytes as bnb

    for block in list(model.transformer_blocks) + list(model.single_transformer_blocks):
        for name, child in list(block.named_modules()):
            if not isinstance(child, torch.nn.Linear):
                continue
            parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
            bias = child.bias is not None
            if quant == "nf4":
                new = bnb.nn.Linear4bit(
                    child.in_features, child.out_features, bias=bias, compute_dtype=torch.bfloat16, quant_type="nf4"
                )
                new.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
            else:
                new = bnb.nn.Linear8bitLt(
                    child.in_features, child.out_features, bias=bias, has_fp16_weights=False, threshold=6.0
                )
                new.weight = bnb.nn.Int8Params(child.weight.data, requires_grad=False, has_fp16_weights=False)
            if bias:
                new.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name.rsplit(".", 1)[-1], new)


def run_case(args, quant: str, side: int, device) -> dict:
    from lorarun.image import memory
    from lorarun.image.engine.flux.lora import add_flux_lora
    from lorarun.image.engine.flux.step import flow_loss

    tiny = args.tiny
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    transformer = build_transformer(tiny, quant, device)
    params = add_flux_lora(transformer, args.rank, args.rank, "all")
    if not tiny:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    lat = side // 8
    t5_dim, pooled_dim, tokens = (32, 32, 16) if tiny else (4096, 768, 512)
    latents = torch.randn(args.batch, 16, lat, lat, device=device)
    t5 = torch.randn(args.batch, tokens, t5_dim, device=device, dtype=torch.bfloat16)
    pooled = torch.randn(args.batch, pooled_dim, device=device, dtype=torch.bfloat16)
    gen = torch.Generator(device).manual_seed(1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else None
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step():
        loss = flow_loss(
            transformer,
            latents,
            t5.to(dtype),
            pooled.to(dtype),
            None,
            None,
            gen,
            sampling="shift",
            shift=3.1582,
            sigmoid_scale=1.0,
            guidance=1.0,
            weight_dtype=dtype,
            autocast=autocast,
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    float(loss.detach())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    predicted = memory.peak_allocated_gib("flux", (side, side), args.batch, args.rank, True, False, quantization=quant)
    row = {
        "quantization": quant,
        "resolution": side,
        "batch": args.batch,
        "rank": args.rank,
        "seconds_per_step": round(seconds, 4),
        "peak_gib": round(peak, 2) if peak is not None else None,
        "predicted_peak_gib": round(predicted, 2),
        "peak_over_predicted": round(peak / predicted, 3) if peak is not None else None,
        "loss": round(float(loss), 4),
    }
    print(json.dumps(row), flush=True)
    return row  # the model, optimizer and step closure go with this frame


def run_flux(args, device) -> list[dict]:
    """Every (quantisation, resolution) case; one that does not fit is a row saying so. `args`: tiny, flux_quant,
    flux_resolutions, batch, rank, steps, warmup (engine_throughput.py maps its flags onto these)."""
    quants = ["bf16"] if args.tiny else args.flux_quant
    sides = [64] if args.tiny else args.flux_resolutions
    rows = []
    for quant in quants:
        for side in sides:
            try:
                rows.append(run_case(args, quant, side, device))
            except torch.cuda.OutOfMemoryError as exc:  # report and go on: the table says which did not fit
                rows.append({"quantization": quant, "resolution": side, "error": f"out of memory: {exc}"[:300]})
                print(json.dumps(rows[-1]), flush=True)
    return rows
