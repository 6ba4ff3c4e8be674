"""Engine throughput: our training step (b) against the plain diffusers+peft loop (a), in one process.

(a) is `../shared/bench/unet_lora_bench.py`'s step verbatim (the numbers in reference/baselines.md): UNet from the
real config with random weights, frozen bf16 base, peft LoRA rank 32 / alpha 16 on kohya's targets with fp32 LoRA
weights under autocast, SDPA, fused AdamW, cached latents and text embeddings (only the UNet runs).
(b) is what the engine runs per step with the fast step on (image/engine/fast/): the engine's LoRA, loss
(`engine/step.py`), optimizer, gradient clipping, and the fast step's levers. Variants alternate in rounds after
warm-up (runs vary up to ~1.6x between processes, so only same-process ratios mean anything).

Printed per (model, batch): samples/s, peak GiB (each variant measured alone), achieved TFLOP/s (FLOPs of one
step counted with torch.utils.flop_counter), share of this device's measured peak (a large matmul in the step's
dtype), and (b)/(a). Also:
- same math: the engine's plain step (fast_step off) and the fast step from one seed: losses over the first steps,
  LoRA weights after N steps (relative to the update size, against bf16's own distance from fp32);
- host syncs in the fast step (CUDA: torch.cuda.set_sync_debug_mode("error") over two steps);
- the largest batch that fits this GPU (image/engine/fast/autobatch.py);
- `--with-engine-plain`: also the engine's plain step (fast_step off): the engine's loss, LoRA, optimizer and clipping
  against the plain loop with no fast-step lever (what the former bench/engine_bench.py measured);
- `--levers`: the fast step with each lever off in turn, and with channels_last / checkpointing on;
- `--models flux`: the Flux.1 step for each base quantisation (bf16, int8, nf4), seconds per step and peak memory
  against the estimate's (bench/flux_step.py);
- the guides' reference job end to end through the engine (50 generated images x 10 repeats x 10 epochs, SD1.5 at
  512, batch as the engine chooses), wall time split into model load, caching and training.

    python bench/engine_throughput.py                      # CUDA: sd15 bs 1/4/8, sdxl bs 1/4, reference job
    python bench/engine_throughput.py --models sd15 --batches 8 --levers --no-reference
    python bench/engine_throughput.py --tiny               # CPU: tiny UNets, fp32, a tiny reference job
Writes engine_throughput.json into $OUT (or the current folder). Not a CI test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]
RANK, ALPHA, LR = 32, 16, 1e-4
GPU_PLAN = {"sd15": [1, 4, 8], "sdxl": [1, 4]}
TINY_PLAN = {"tiny-sd15": [1, 2, 4], "tiny-sdxl": [1, 2]}


# --- models and inputs ------------------------------------------------------------------------------------------


def build_unet(model: str, device, dtype):
    """Random-weight UNet with the real architecture (from the configs shipped in image/assets/configs)."""
    from diffusers import UNet2DConditionModel

    if model.startswith("tiny-"):
        from lorarun.image.engine.tiny import build_tiny

        unet = build_tiny(model.split("-", 1)[1]).unet
    else:
        from lorarun.image.engine.tokenizer import ASSETS

        with torch.device(device):  # initialising 2.6 B parameters on the CPU takes a minute; on the GPU, seconds
            unet = UNet2DConditionModel.from_config(
                UNet2DConditionModel.load_config(ASSETS / "configs" / model / "unet")
            )
    return unet.to(device, dtype)


def inputs(unet, bs: int, device, dtype, seed: int = 0):
    c = unet.config
    side = c.sample_size
    g = torch.Generator(device).manual_seed(seed)
    lat = torch.randn(bs, 4, side, side, device=device, generator=g)
    enc = torch.randn(bs, 77, c.cross_attention_dim, device=device, dtype=dtype, generator=g)
    add = None
    if c.addition_embed_type == "text_time":
        pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
        px = side * 8
        add = {
            "text_embeds": torch.randn(bs, pooled, device=device, dtype=dtype, generator=g),
            "time_ids": torch.tensor([[px, px, 0, 0, px, px]] * bs, device=device, dtype=dtype),
        }
    return lat, enc, add


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- (a) the plain loop, as ../shared/bench/unet_lora_bench.py -------------------------------------------------


class PlainLoop:
    name = "plain"

    def __init__(self, model: str, device, dtype):
        from peft import LoraConfig

        unet = build_unet(model, device, dtype)
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian", target_modules=TARGETS))
        for p in unet.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        unet.train()
        self.unet, self.device, self.dtype = unet, device, dtype
        self.params = [p for p in unet.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=LR, fused=device.type == "cuda")

    def __call__(self, lat, enc, add):
        noise = torch.randn_like(lat)
        t = torch.randint(0, 1000, (lat.shape[0],), device=self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            pred = self.unet(lat + noise, t, enc, added_cond_kwargs=add).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss


# --- (b) the engine's step ----------------------------------------------------------------------------------------


class EngineStep:
    """The engine's per-step work: diffusion_loss (kohya's noise schedule, device RNG), backward, clip 1.0, the
    engine's optimizer; `options` None = the plain engine step (fast_step off: fp32 LoRA under autocast)."""

    def __init__(
        self,
        model: str,
        device,
        dtype,
        options,
        *,
        optimizer="AdamW",
        num_shapes=1,
        seed=0,
        channels_last=False,
        checkpoint_every=None,
        name="fast",
    ):
        from lorarun.image.engine.fast.setup import prepare_fast
        from lorarun.image.engine.lora import add_unet_lora
        from lorarun.image.engine.optim import build_optimizer
        from lorarun.image.engine.step import NoiseSchedule

        self.name, self.device, self.dtype, self.options = name, device, dtype, options
        torch.manual_seed(seed)
        unet = build_unet(model, device, dtype)
        params = add_unet_lora(unet, RANK, ALPHA)
        unet.to(device)
        if channels_last:
            unet.to(memory_format=torch.channels_last)
        self.channels_last = channels_last
        unet.train()
        self.module = self.unet = unet  # .unet: the uncompiled module (config for inputs, LoRA for saving)
        cuda = device.type == "cuda"
        build = lambda groups: build_optimizer(optimizer, groups, LR, (), cuda)  # noqa: E731
        groups = [{"params": params, "lr": LR}]
        if options is None:
            if checkpoint_every:
                unet.enable_gradient_checkpointing()
            self.net, self.opt, self.clip, self.fast = unet, build(groups), params, None
        else:
            self.fast = prepare_fast(
                unet,
                groups,
                build,
                options,
                weight_dtype=dtype,
                num_shapes=num_shapes,
                checkpoint_every=checkpoint_every,
            )
            self.net, self.opt, self.clip = self.fast.unet, self.fast.optimizer, self.fast.clip_params
        self.schedule = NoiseSchedule.kohya(device)
        self.generator = torch.Generator(device).manual_seed(seed + 1)
        self.loss_sum = torch.zeros((), device=device)  # read every N steps, as the trainer does

    def __call__(self, lat, enc, add):
        from lorarun.image.engine.step import diffusion_loss

        autocast = None
        if self.options is None and self.dtype != torch.float32:
            autocast = torch.autocast(self.device.type, dtype=self.dtype)
        loss = diffusion_loss(
            self.net,
            lat,
            enc,
            add,
            None,
            self.schedule,
            self.generator,
            weight_dtype=self.dtype,
            autocast=autocast,
            channels_last=self.channels_last,
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.clip, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.loss_sum += loss.detach()
        return loss

    def lora_state(self) -> dict[str, torch.Tensor]:
        from lorarun.image.engine.lora import lora_state_dict

        state = lora_state_dict(self.module)
        if self.fast is not None:
            state = self.fast.full_precision(state)
        return {k: v.detach().float().cpu().clone() for k, v in state.items()}


# --- measuring ----------------------------------------------------------------------------------------------------


def step_flops(step, lat, enc, add) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(lat, enc, add)
    return counter.get_total_flops()


def matmul_peak(device, dtype, n: int) -> float:
    """Achieved FLOP/s of one large square matmul: the 'chip peak' the shares are against (measured, not a spec)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 3
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def timed(step, batch, steps: int, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(*batch)
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    if not torch.isfinite(loss):
        raise RuntimeError(f"{step.name}: loss is not finite")
    return dt


def warm_and_peak(step, batch, warm: int, device, base: int) -> float | None:
    """Warm-up steps (compiles and CUDA-graph captures happen here); peak GiB above `base`, the memory allocated
    before this variant was built: its weights, LoRA, optimizer state, graph pools and the step's activations."""
    if device.type != "cuda":
        for _ in range(warm):
            step(*batch)
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warm):
        step(*batch)
    sync(device)
    return round((torch.cuda.max_memory_allocated(device) - base) / 2**30, 2)


def host_syncs(step, batch, device) -> str:
    """'none' when two steps run without a host synchronisation (CUDA's sync debug mode, warning flavour: the
    steps still complete), else the first warning."""
    if device.type != "cuda":
        return "n/a (CPU)"
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(*batch)
            step(*batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sync(device)
    found = [str(w.message).splitlines()[0][:200] for w in caught if "synchroniz" in str(w.message)]
    return "none" if not found else f"{len(found)}: {found[0]}"


@dataclass
class Row:
    model: str
    batch: int
    variant: str
    step_s: list[float] = field(default_factory=list)
    peak_gib: float | None = None
    flops: int | None = None
    note: str = ""

    def summary(self, peak_flops: float, baseline: Row | None) -> dict:
        best = min(self.step_s)
        out = {
            "model": self.model,
            "batch": self.batch,
            "variant": self.variant,
            "step_ms": round(best * 1e3, 2),
            "it_s": round(1 / best, 3),
            "samples_s": round(self.batch / best, 2),
            "peak_gib": self.peak_gib,
        }
        if self.flops:
            achieved = self.flops / best
            out["tflop_s"] = float(f"{achieved / 1e12:.4g}")
            out["share_of_peak"] = round(achieved / peak_flops, 4)
        if baseline is not None and baseline is not self:
            out["vs_plain"] = round(min(baseline.step_s) / best, 3)
        if self.note:
            out["note"] = self.note
        return out


def run_model(model: str, batches: list[int], variants: dict, args, device, dtype, peak_flops: float) -> list[dict]:
    """One UNet per variant, fed every batch size in turn (as the engine feeds its bucket shapes). Each variant is
    built and warmed up alone (its peak memory then counts only itself); timing rounds then alternate."""
    cuda = device.type == "cuda"
    steps, rows, results = {}, {}, []
    for name, make in variants.items():
        base = torch.cuda.memory_allocated(device) if cuda else 0
        try:
            step = make(len(batches))
        except Exception as exc:
            results.append({"model": model, "variant": name, "error": f"build: {exc!r}"[:300]})
            continue
        steps[name] = step
        for bs in batches:
            row = rows[(name, bs)] = Row(model, bs, name)
            try:
                row.peak_gib = warm_and_peak(step, inputs(step.unet, bs, device, dtype), args.warm, device, base)
            except Exception as exc:
                row.note = f"error: {exc!r}"[:300]
                if cuda:
                    torch.cuda.empty_cache()
    for bs in batches:
        data = inputs(next(iter(steps.values())).unet, bs, device, dtype) if steps else None
        alive = {n: s for n, s in steps.items() if not rows[(n, bs)].note}
        for step in alive.values():
            step(*data)  # back to this batch size after the others' warm-up
        if "plain" in alive:
            flops = step_flops(alive["plain"], *data)
            for name in alive:
                rows[(name, bs)].flops = flops  # same math → same FLOPs; counted on the uncompiled plain loop
        if "fast" in alive:
            rows[("fast", bs)].note = f"host syncs in two steps: {host_syncs(alive['fast'], data, device)}"
        for _ in range(args.rounds):  # alternate, so drift (clocks, other tenants) hits every variant alike
            for name, step in alive.items():
                rows[(name, bs)].step_s.append(timed(step, data, args.steps, device))
        base_row = rows.get(("plain", bs))
        for name in steps:
            row = rows[(name, bs)]
            results.append(
                row.summary(peak_flops, base_row if base_row and base_row.step_s else None)
                if row.step_s
                else {"model": model, "batch": bs, "variant": name, "error": row.note}
            )
            print(json.dumps(results[-1]), flush=True)
    del steps
    if cuda:
        torch.cuda.empty_cache()
    return results


def variants_for(model: str, args, device, dtype, levers: bool) -> dict:
    from lorarun.image.engine.fast.options import FastOptions

    cuda = device.type == "cuda"
    full = FastOptions(compile_backend=args.compile_backend)
    if not cuda:
        full = full.without("cuda_graphs")
    if dtype == torch.float32:
        full = full.without("master_weights")
    if args.no_compile:
        full = full.without("compile", "cuda_graphs")

    def fast(options, name, **kw):
        return lambda n: EngineStep(
            model, device, dtype, options, optimizer=args.optimizer, num_shapes=n, name=name, **kw
        )

    out = {"plain": lambda n: PlainLoop(model, device, dtype), "fast": fast(full, "fast")}
    if args.with_engine_plain or levers:
        out["engine-plain"] = fast(None, "engine-plain")
    if levers:
        for lever in full.active():
            if lever == "lean_checkpointing":
                continue
            out[f"fast-{lever}"] = fast(full.without(lever), f"fast-{lever}")
        if cuda:
            out["fast+channels_last"] = fast(full, "fast+channels_last", channels_last=True)
        out["fast+ckpt/2"] = fast(full, "fast+ckpt/2", checkpoint_every=2)
        out["fast+ckpt/1"] = fast(full, "fast+ckpt/1", checkpoint_every=1)
    return out


# --- same math ----------------------------------------------------------------------------------------------------


def same_math(model: str, bs: int, steps: int, args, device, dtype) -> dict:
    """The engine's plain step vs the fast step (and vs an fp32 plain step, bf16's own noise) from one seed."""
    from lorarun.image.engine.fast.options import FastOptions

    full = FastOptions(compile_backend=args.compile_backend)
    if device.type != "cuda":
        full = full.without("cuda_graphs")
    if dtype == torch.float32:
        full = full.without("master_weights")
    if args.no_compile:
        full = full.without("compile", "cuda_graphs")
    result = {"model": model, "batch": bs, "steps": steps}
    runs = {}
    configs = [("plain", dtype, None), ("fast", dtype, full)]
    if dtype != torch.float32:
        configs.append(("plain-fp32", torch.float32, None))
    for name, dt, options in configs:
        step = EngineStep(model, device, dt, options, optimizer="AdamW", seed=123, name=name)
        start = step.lora_state()
        batch = inputs(step.unet, bs, device, dt, seed=7)
        losses = [float(step(*batch).detach()) for _ in range(steps)]
        runs[name] = (losses, step.lora_state())
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def gap(a, b):
        num = sum(((a[k] - start[k]) - (b[k] - start[k])).pow(2).sum() for k in b).sqrt()
        return float(num / sum((b[k] - start[k]).pow(2).sum() for k in b).sqrt())

    plain_losses, plain = runs["plain"]
    fast_losses, fast = runs["fast"]
    result["loss_max_rel_diff"] = round(
        max(abs(f - p) / max(abs(p), 1e-12) for f, p in zip(fast_losses, plain_losses)), 6
    )
    result["update_gap_fast_vs_plain"] = round(gap(fast, plain), 5)
    result["same_keys_and_shapes"] = fast.keys() == plain.keys() and all(fast[k].shape == plain[k].shape for k in plain)
    if "plain-fp32" in runs:
        reference = runs["plain-fp32"][1]
        result["update_gap_plain_vs_fp32"] = round(gap(plain, reference), 5)  # bf16's own noise
        result["update_gap_fast_vs_fp32"] = round(gap(fast, reference), 5)
        noise = result["update_gap_plain_vs_fp32"]
        result["ok"] = (
            result["same_keys_and_shapes"]
            and result["update_gap_fast_vs_plain"] <= 1.5 * noise + 0.02
            and result["loss_max_rel_diff"] < 0.05
        )
    else:
        result["ok"] = (
            result["same_keys_and_shapes"]
            and result["update_gap_fast_vs_plain"] < 1e-3
            and result["loss_max_rel_diff"] < 1e-4
        )
    print(json.dumps(result), flush=True)
    return result


# --- the largest batch ----------------------------------------------------------------------------------------------


def _probe_largest_batch(model: str, args, device, dtype):
    from lorarun.image.engine.fast.autobatch import cuda_peak_probe, largest_batch
    from lorarun.image.engine.fast.options import FastOptions

    step = EngineStep(model, device, dtype, FastOptions().without("compile", "cuda_graphs"), name="probe")

    def run(bs):
        step(*inputs(step.unet, bs, device, dtype))

    budget = torch.cuda.get_device_properties(device).total_memory / 2**30 * 0.9
    return largest_batch(cuda_peak_probe(run, device), budget, cap=args.max_auto_batch)


def auto_batch(model: str, args, device, dtype) -> dict:
    """The batch the fast step (eager: compiled uses less memory, so this errs low) fits into 90 % of the GPU."""
    pick = _probe_largest_batch(model, args, device, dtype)
    torch.cuda.empty_cache()  # the probe's model went with its frame: its memory goes back now
    result = {"model": model, **pick.__dict__}
    print(json.dumps({"auto_batch": result}), flush=True)
    return result


# --- the reference job through the engine ---------------------------------------------------------------------------


def make_random_sd15(folder: Path, device) -> Path:
    """A diffusers SD1.5 folder with random weights (real architecture): what the engine loads as `model.base`."""
    import shutil

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lorarun.image.engine.assets import pipeline_config_dir

    shutil.copytree(pipeline_config_dir("sd15"), folder, dirs_exist_ok=True)
    with torch.device(device):
        parts = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
        }
    for sub, module in parts.items():
        module.save_pretrained(folder / sub, safe_serialization=True)
    return folder


def make_images(folder: Path, count: int, side: int) -> None:
    from PIL import Image, ImageDraw

    colours = [(220, 40, 40), (40, 70, 220), (40, 180, 60), (230, 210, 40), (150, 60, 200)]
    names = ["red", "blue", "green", "yellow", "purple"]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        im = Image.new("RGB", (side, side), (245, 245, 240))
        d = ImageDraw.Draw(im)
        r = side * (0.2 + 0.05 * (i % 4))
        c = side / 2 + (i % 7 - 3) * side / 20
        d.ellipse((c - r, c - r, c + r, c + r), fill=colours[i % 5])
        im.save(folder / f"img{i:03d}.png")
        (folder / f"img{i:03d}.txt").write_text(f"lrn style, a {names[i % 5]} circle, plain background\n")


def reference_job(args, device, workdir: Path, batch: int, fast_step: str) -> dict:
    """50 images x 10 repeats x 10 epochs at 512 (the guides' job), engine defaults otherwise (text encoder trained,
    checkpoints every 2 epochs), sampling off. --tiny: 8 images x 2 repeats x 2 epochs on the tiny model at 64."""
    from lorarun.image.engine.events import EventLog  # noqa: F401 — the engine's own events are read back

    tiny = args.tiny
    images, repeats, epochs, side = (8, 2, 2, 64) if tiny else (50, 10, 10, 512)
    root = workdir / f"reference-{fast_step}"
    data_dir = root / "dataset"
    make_images(data_dir / f"{repeats}_lrn style", images, side)
    if tiny:
        base = "builtin:tiny-sd15"
    else:
        base_dir = workdir / "sd15-random"
        if not (base_dir / "unet" / "diffusion_pytorch_model.safetensors").exists():
            make_random_sd15(base_dir, device)
        base = str(base_dir)
    cfg = {
        "job_id": "bench",
        "output_dir": str(root / "out"),
        "output_name": "ref",
        "work_dir": str(root / "work"),
        "device": "cpu" if device.type == "cpu" else "auto",
        "model": {"family": "sd15", "base": base},
        "dataset": {
            "train_data_dir": str(data_dir),
            "resolution": side,
            **({"min_bucket_reso": 32, "max_bucket_reso": 128, "bucket_reso_steps": 32} if tiny else {}),
        },
        "training": {
            "max_train_epochs": epochs,
            "batch_size": batch,
            "save_every_n_epochs": 2,
            "optimizer_type": args.reference_optimizer,
            "fast_step": fast_step,
            # CPU: inductor compiles the tiny UNet in minutes (bench/RESULTS.md); the step table measures it
            "fast_step_off": (["compile"] if args.no_compile or tiny else []),
        },
        "sample": {"prompts": [], "grid_strengths": [], "grid_seeds": []},
    }
    config = root / "engine_config.json"
    config.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if tiny:
        env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "lorarun.image.engine", "train", "--config", str(config), "--step-event-interval", "5"],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.time() - t0
    events = [json.loads(line) for line in (root / "out" / "events.jsonl").read_text().splitlines() if line.strip()]
    result = {
        "job": f"{images} images x {repeats} repeats x {epochs} epochs @ {side}",
        "fast_step": fast_step,
        "batch": batch,
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
    }
    if proc.returncode != 0:
        result["stderr_tail"] = proc.stderr[-1500:]
        print(json.dumps(result), flush=True)
        return result

    def first(kind):
        return next(e for e in events if e["event"] == kind)

    started, finished = first("started"), first("finished")
    caching = [e for e in events if e["event"] == "caching"]
    steps = [e for e in events if e["event"] == "step"]
    train_start = next(
        (e["t"] for e in events if e["event"] == "fast_step"), caching[-1]["t"] if caching else started["t"]
    )
    result.update(
        {
            "total_steps": started["total_steps"],
            "fast_step_reason": started.get("fast_step"),
            "process_start_to_started_s": round(started["t"] - t0, 1),
            "model_load_s": round((caching[0]["t"] if caching else train_start) - started["t"], 1),
            "caching_s": round(train_start - caching[0]["t"], 1) if caching else 0.0,
            "training_s": round(finished["t"] - train_start, 1),  # includes compiles and checkpoint writes
            "samples_per_s_training": round(started["total_steps"] * batch / max(finished["t"] - train_start, 1e-9), 2),
            "last_it_s": steps[-1]["it_s"] if steps else None,
        }
    )
    print(json.dumps(result), flush=True)
    return result


# --- main -----------------------------------------------------------------------------------------------------------


def versions(device) -> dict:
    import diffusers
    import peft

    out = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "device": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
        ),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        out["cuda"] = torch.version.cuda
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny UNets, fp32: checks the script and levers")
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--batches", nargs="+", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round")
    parser.add_argument("--warm", type=int, default=None, help="warm-up steps per variant and batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levers", action="store_true", help="also the fast step with each lever off")
    parser.add_argument("--with-engine-plain", action="store_true", help="also the engine's plain step")
    parser.add_argument("--optimizer", default="AdamW", help="engine optimizer for (b): fused AdamW, as (a)")
    parser.add_argument("--compile-backend", default="inductor", help="inductor | aot_eager (CPU: no codegen)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--same-math-steps", type=int, default=6)
    parser.add_argument("--no-same-math", action="store_true")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--reference-plain", action="store_true", help="also the reference job with fast_step off")
    parser.add_argument("--reference-batch", type=int, default=None, help="default: the auto batch (CUDA), 2 (tiny)")
    parser.add_argument("--reference-optimizer", default="auto", help="the engine's choice: AdamW8bit on CUDA")
    parser.add_argument("--max-auto-batch", type=int, default=16)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="default bf16 on CUDA, fp32 --tiny")
    parser.add_argument("--flux-quant", nargs="+", default=["bf16", "int8", "nf4"], help="with --models flux")
    parser.add_argument("--flux-resolutions", nargs="+", type=int, default=[512, 1024], help="with --models flux")
    parser.add_argument("--flux-rank", type=int, default=16, help="with --models flux")
    parser.add_argument("--flux-steps", type=int, default=5, help="timed Flux steps per case (after 2 warm-up)")
    args = parser.parse_args(argv)
    flux = bool(args.models) and "flux" in args.models
    if args.models and set(args.models) == {"flux"}:
        args.no_reference = args.no_same_math = True  # both are SD1.5 measures

    if args.tiny:
        device = torch.device("cpu")
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        plan = {
            m: args.batches or b
            for m, b in TINY_PLAN.items()
            if not args.models or m in args.models or m.split("-", 1)[1] in args.models
        }
        args.steps, args.warm = args.steps or 3, args.warm or 2
    else:
        if not torch.cuda.is_available():
            print("engine_throughput: needs a CUDA GPU (or --tiny for the CPU check)", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        plan = {m: args.batches or b for m, b in GPU_PLAN.items() if not args.models or m in args.models}
        args.steps, args.warm = args.steps or 20, args.warm or 5
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("fp32" if args.tiny else "bf16")]
    out_dir = Path(os.environ.get("OUT", "."))
    report: dict = {
        "versions": versions(device),
        "dtype": str(dtype).replace("torch.", ""),
        "mode": "tiny CPU check (NOT the target figures)" if args.tiny else "GPU",
        "rows": [],
    }
    peak = matmul_peak(device, dtype, 1024 if args.tiny else 8192)
    report["measured_matmul_peak_tflop_s"] = round(peak / 1e12, 3)
    print(
        json.dumps({"versions": report["versions"], "matmul_peak_tflop_s": report["measured_matmul_peak_tflop_s"]}),
        flush=True,
    )

    def save():
        (out_dir / "engine_throughput.json").write_text(json.dumps(report, indent=1))

    for model, batches in plan.items():
        report["rows"] += run_model(
            model, batches, variants_for(model, args, device, dtype, args.levers), args, device, dtype, peak
        )
        save()
    if flux:
        from flux_step import run_flux  # bench/'s own module (run as `python bench/engine_throughput.py`)

        flux_args = argparse.Namespace(
            tiny=args.tiny,
            flux_quant=args.flux_quant,
            flux_resolutions=args.flux_resolutions,
            batch=1,
            rank=args.flux_rank,
            steps=args.flux_steps,
            warmup=2,
        )
        report["flux"] = run_flux(flux_args, device)
        save()
    if not args.no_same_math:
        report["same_math"] = [same_math(m, min(b), args.same_math_steps, args, device, dtype) for m, b in plan.items()]
        save()
    if device.type == "cuda" and "sd15" in plan:
        report["auto_batch"] = auto_batch("sd15", args, device, dtype)
        save()
    if not args.no_reference:
        batch = args.reference_batch or (2 if args.tiny else report.get("auto_batch", {}).get("batch", 8))
        with tempfile.TemporaryDirectory(prefix="lorarun-ref-") as tmp:
            report["reference_job"] = [reference_job(args, device, Path(tmp), batch, "on" if args.tiny else "auto")]
            if args.reference_plain:
                report["reference_job"].append(reference_job(args, device, Path(tmp), batch, "off"))
        save()
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    v = report["versions"]
    print(
        f"\n{report['mode']}: {v['device']}, torch {v['torch']}, diffusers {v['diffusers']}, peft {v['peft']}, "
        f"{report['dtype']}; measured matmul peak {report['measured_matmul_peak_tflop_s']} TFLOP/s"
    )
    print("model batch variant | step ms  samples/s  peak GiB | TFLOP/s  share | vs plain")
    for r in report["rows"]:
        if "error" in r:
            print(r.get("model"), r.get("batch", ""), r["variant"], "ERROR", r["error"])
            continue
        print(
            f"{r['model']} {r['batch']} {r['variant']} | {r['step_ms']} {r['samples_s']} {r['peak_gib']} | "
            f"{r.get('tflop_s', '')} {r.get('share_of_peak', '')} | {r.get('vs_plain', '')}"
        )
    for s in report.get("same_math", []):
        print("same math:", json.dumps(s))
    for j in report.get("reference_job", []):
        print("reference job:", json.dumps(j))
    for f in report.get("flux", []):
        print("flux:", json.dumps(f))


if __name__ == "__main__":
    sys.exit(main())
