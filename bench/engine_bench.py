"""This engine's training step side by side with the plain diffusers+peft loop of the shared baseline
(`/work/shared/bench/unet_lora_bench.py`), in one process, reporting ratios (runs vary by up to ~1.6x between
processes, so only same-process ratios mean anything; see reference/baselines.md).

Both variants: UNet from the real SD1.5 / SDXL configs with random weights (same FLOPs), frozen base in bf16, LoRA
rank 32 / alpha 16 on kohya's targets with fp32 LoRA params, bf16 autocast, SDPA, cached latents and text
embeddings (only the UNet runs). "naive" is the baseline's step verbatim (global RNG, fused AdamW, no clipping);
"engine" is `lorarun.image.engine.step.diffusion_loss` + the engine's optimizer + gradient clipping, i.e. what
`train.py` runs per step. Variants alternate in rounds so drift hits both alike.

    python bench/engine_bench.py                 # CUDA: sd15 bs 1/4/8, sdxl bs 1/4
    python bench/engine_bench.py --models sd15 --batches 4 --steps 50
    python bench/engine_bench.py --tiny          # CPU smoke check with the built-in tiny UNet
Writes engine_bench.json into $OUT (or the current folder).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]


def build_unet(model: str, device, dtype, engine: bool):
    from diffusers import UNet2DConditionModel

    if model.startswith("tiny-"):
        from lorarun.image.engine.tiny import build_tiny

        unet = build_tiny(model.split("-", 1)[1]).unet
    else:
        from lorarun.image.engine.assets import pipeline_config_dir

        folder = pipeline_config_dir(model)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    unet.to(device, dtype)
    if engine:
        from lorarun.image.engine.lora import add_unet_lora

        params = add_unet_lora(unet, 32, 16)
    else:  # the baseline's setup, verbatim
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=32, lora_alpha=16, init_lora_weights="gaussian", target_modules=TARGETS))
        for p in unet.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        params = [p for p in unet.parameters() if p.requires_grad]
    unet.to(device)
    unet.train()
    return unet, params


def inputs(unet, bs: int, device, dtype):
    c = unet.config
    side = c.sample_size
    lat = torch.randn(bs, 4, side, side, device=device)
    enc = torch.randn(bs, 77, c.cross_attention_dim, device=device, dtype=dtype)
    add = None
    if c.addition_embed_type == "text_time":
        pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
        px = side * 8
        add = {
            "text_embeds": torch.randn(bs, pooled, device=device, dtype=dtype),
            "time_ids": torch.tensor([[px, px, 0, 0, px, px]] * bs, device=device, dtype=dtype),
        }
    return lat, enc, add


def naive_step(unet, opt, lat, enc, add, device, dtype):
    noise = torch.randn_like(lat)
    t = torch.randint(0, 1000, (lat.shape[0],), device=device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        pred = unet(lat + noise, t, enc, added_cond_kwargs=add).sample
    loss = torch.nn.functional.mse_loss(pred.float(), noise)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def make_engine_step(device, dtype):
    from lorarun.image.engine.step import NoiseSchedule, diffusion_loss

    schedule = NoiseSchedule.kohya(device)
    generator = torch.Generator(device).manual_seed(0)
    autocast_enabled = dtype != torch.float32

    def step(unet, opt, lat, enc, add, params):
        ctx = torch.autocast(device.type, dtype=dtype) if autocast_enabled else None
        loss = diffusion_loss(unet, lat, enc, add, None, schedule, generator, weight_dtype=dtype, autocast=ctx)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, steps: int, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = fn()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    assert torch.isfinite(loss)
    return dt


def run_pair(model: str, bs: int, steps: int, warm: int, rounds: int, device, dtype) -> dict:
    from lorarun.image.engine.optim import build_optimizer

    result = {"model": model, "batch": bs}
    setups = {}
    for variant in ("naive", "engine"):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        unet, params = build_unet(model, device, dtype, engine=variant == "engine")
        cuda = device.type == "cuda"
        if variant == "naive":
            opt = torch.optim.AdamW(params, lr=1e-4, fused=cuda)
        else:
            opt = build_optimizer("AdamW", [{"params": params, "lr": 1e-4}], 1e-4, (), cuda)
        lat, enc, add = inputs(unet, bs, device, dtype)
        if variant == "naive":
            fn = lambda u=unet, o=opt, a=(lat, enc, add): naive_step(u, o, *a, device, dtype)  # noqa: E731
        else:
            step = make_engine_step(device, dtype)
            fn = lambda u=unet, o=opt, a=(lat, enc, add), p=params: step(u, o, *a, p)  # noqa: E731
        for _ in range(warm):
            fn()
        peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None
        setups[variant] = (fn, unet, opt)
        result[f"{variant}_peak_gib"] = peak
    times = {"naive": [], "engine": []}
    for _ in range(rounds):  # alternate, so drift (clocks, other tenants) hits both variants alike
        for variant in ("naive", "engine"):
            times[variant].append(measure(setups[variant][0], steps, device))
    for variant, ts in times.items():
        best = min(ts)
        result[f"{variant}_it_s"] = round(1 / best, 3)
        result[f"{variant}_samples_s"] = round(bs / best, 2)
    result["engine_vs_naive_speed"] = round(result["engine_it_s"] / result["naive_it_s"], 3)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["sd15", "sdxl"])
    parser.add_argument("--batches", nargs="+", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke check with the built-in tiny UNets")
    args = parser.parse_args(argv)
    if args.tiny:
        device, dtype = torch.device("cpu"), torch.float32
        torch.set_num_threads(1)
        plan = [(f"tiny-{m}", b) for m in args.models for b in (args.batches or [2])]
        args.steps, args.warm, args.rounds = min(args.steps, 3), 1, 1
    else:
        if not torch.cuda.is_available():
            raise SystemExit("engine_bench: needs a CUDA GPU (or --tiny for a CPU smoke check)")
        device, dtype = torch.device("cuda"), torch.bfloat16
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        default = {"sd15": [1, 4, 8], "sdxl": [1, 4]}
        plan = [(m, b) for m in args.models for b in (args.batches or default[m])]
    rows = []
    out = os.environ.get("OUT", ".")
    for model, bs in plan:
        try:
            row = run_pair(model, bs, args.steps, args.warm, args.rounds, device, dtype)
        except Exception as exc:  # one OOM must not lose the table
            row = {"model": model, "batch": bs, "error": repr(exc)[:300]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(os.path.join(out, "engine_bench.json"), "w") as f:
            json.dump(rows, f, indent=1)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\n{name} torch {torch.__version__}")
    print("model batch | naive it/s  engine it/s  engine/naive | peak GiB naive/engine")
    for r in rows:
        if "error" in r:
            print(r["model"], r["batch"], "ERROR", r["error"])
            continue
        print(
            f"{r['model']} {r['batch']} | {r['naive_it_s']:.2f} {r['engine_it_s']:.2f} "
            f"{r['engine_vs_naive_speed']:.2f}x | {r['naive_peak_gib']}/{r['engine_peak_gib']}"
        )


if __name__ == "__main__":
    main()
