"""Same math: the fast training step (image/engine/fast/) computes what the plain diffusers+peft step computes.

CPU, tiny UNet, seconds. From the same seed: the same loss over the first steps, the same LoRA weights after N
steps, the same saved file (keys, shapes, metadata). fp32 levers (fused LoRA, flat optimizer, compiled UNet,
every-n-th-block checkpointing) must agree to float rounding; bf16 weights with an fp32 master copy must agree
with the plain bf16-autocast step as closely as that step agrees with fp32 (bf16's own noise).
torch.compile runs with the `aot_eager` backend here: the same dynamo graphs and recompile guards as inductor,
without the C++ code generation that takes minutes on a CI CPU (inductor on CPU: bench/RESULTS.md).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from safetensors import safe_open  # noqa: E402

from lorarun.image.engine.fast.checkpointing import apply_checkpointing, plan, unet_blocks  # noqa: E402
from lorarun.image.engine.fast.compiled import compile_count  # noqa: E402
from lorarun.image.engine.fast.master import MasterWeightsOptimizer  # noqa: E402
from lorarun.image.engine.fast.options import FastOptions, decide  # noqa: E402
from lorarun.image.engine.fast.setup import prepare_fast  # noqa: E402
from lorarun.image.engine.lora import add_unet_lora, lora_state_dict  # noqa: E402
from lorarun.image.engine.step import NoiseSchedule, diffusion_loss  # noqa: E402
from lorarun.image.engine.tiny import build_tiny  # noqa: E402

from .engine_helpers import engine_config, read_events, run_engine, write_config  # noqa: E402

EAGER = FastOptions(compile=False, cuda_graphs=False)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _unet(dtype):
    unet = build_tiny("sd15").unet.to(dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        params = add_unet_lora(unet, 4, 2)
        with torch.no_grad():  # kohya's B starts at zero; give it values so A's gradients are not all zero
            for name, p in unet.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    unet.train()
    return unet, params


def _inputs(shape=(2, 8, 8)):
    b, h, w = shape
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    return torch.randn(b, 4, h, w, generator=g), torch.randn(b, 77, 32, generator=g)


def _train(fast: FastOptions | None, dtype=torch.float32, steps=4, shapes=((2, 8, 8),), lr=1e-3):
    """`steps` optimizer steps, cycling through `shapes`; returns (losses, LoRA state at full precision, unet)."""
    unet, params = _unet(dtype)
    groups = [{"params": params, "lr": lr}]
    build = lambda g: torch.optim.AdamW(g, lr=lr)  # noqa: E731
    if fast is None:
        net, opt, clip, full = unet, build(groups), params, (lambda sd: sd)
    else:
        prepared = prepare_fast(unet, groups, build, fast, weight_dtype=dtype, num_shapes=len(shapes))
        net, opt, clip, full = prepared.unet, prepared.optimizer, prepared.clip_params, prepared.full_precision
    schedule, gen = NoiseSchedule.kohya("cpu"), torch.Generator().manual_seed(1)
    batches = [_inputs(s) for s in shapes]
    losses = []
    for i in range(steps):
        lat, enc = batches[i % len(batches)]
        autocast = torch.autocast("cpu", dtype=dtype) if fast is None and dtype != torch.float32 else None
        loss = diffusion_loss(net, lat, enc, None, None, schedule, gen, weight_dtype=dtype, autocast=autocast)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, {k: v.detach().float().clone() for k, v in full(lora_state_dict(unet)).items()}, unet


def _update_gap(a: dict, b: dict, start: dict) -> float:
    """‖Δa − Δb‖ / ‖Δb‖ over all LoRA tensors, Δ = weights after training − weights before."""
    num = sum(((a[k] - start[k]) - (b[k] - start[k])).pow(2).sum() for k in b).sqrt()
    return float(num / sum((b[k] - start[k]).pow(2).sum() for k in b).sqrt())


def test_fp32_levers_compute_the_plain_step():
    plain_losses, plain, _ = _train(None)
    unets = []
    for options in (EAGER, EAGER.without("flat_optimizer"), EAGER.without("fused_lora")):
        losses, weights, unet = _train(options)
        unets.append(unet)
        assert losses == pytest.approx(plain_losses, rel=1e-5)
        assert weights.keys() == plain.keys()
        for key in plain:
            assert weights[key].shape == plain[key].shape
            assert torch.allclose(weights[key], plain[key], atol=1e-5, rtol=1e-4), key
    # the fused forward is in place and the flat layout holds: the LoRA weights are views of one tensor
    lora_params = [p for n, p in unets[0].named_parameters() if "lora_" in n]
    assert len({p.untyped_storage().data_ptr() for p in lora_params}) == 1
    assert sum(hasattr(m, "_peft_forward") for m in unets[0].modules()) > 0


def test_bf16_weights_with_fp32_master_stay_within_bf16_noise():
    _, start, _ = _train(None, steps=0)
    _, fp32, _ = _train(None, steps=5)
    plain_losses, plain_bf16, _ = _train(None, torch.bfloat16, steps=5)
    fast_losses, fast_bf16, unet = _train(EAGER, torch.bfloat16, steps=5)
    assert fast_losses == pytest.approx(plain_losses, rel=2e-2)
    noise = _update_gap(plain_bf16, fp32, start)  # how far bf16 autocast already is from fp32
    assert _update_gap(fast_bf16, plain_bf16, start) <= 1.5 * noise + 0.02
    assert _update_gap(fast_bf16, fp32, start) <= 1.5 * noise + 0.02
    # the model holds bf16 LoRA weights (no casts in the step); the saved state is the fp32 master
    assert {p.dtype for n, p in unet.named_parameters() if "lora_" in n} == {torch.bfloat16}
    assert {v.dtype for v in fast_bf16.values()} == {torch.float32}


@pytest.mark.slow
def test_compiled_unet_same_math_and_one_compile_per_bucket_shape():
    import torch._dynamo

    torch._dynamo.reset()
    shapes = ((2, 8, 8), (1, 8, 12))  # two buckets, alternating: the second round must not compile again
    plain_losses, plain, _ = _train(None, steps=4, shapes=shapes)
    before = compile_count()
    losses, weights, _ = _train(FastOptions(cuda_graphs=False, compile_backend="aot_eager"), steps=4, shapes=shapes)
    assert compile_count() - before == len(shapes)
    assert losses == pytest.approx(plain_losses, rel=1e-4)
    for key in plain:
        assert torch.allclose(weights[key], plain[key], atol=1e-5, rtol=1e-4), key
    torch._dynamo.reset()


def test_checkpointing_every_nth_block_is_the_same_math():
    _, plain, _ = _train(None, steps=2)
    unet, _ = _unet(torch.float32)
    assert apply_checkpointing(unet, 2) == len(range(0, len(unet_blocks(unet)), 2))
    flags = [any(getattr(m, "gradient_checkpointing", False) for m in b.modules()) for b in unet_blocks(unet)]
    assert flags == [i % 2 == 0 for i in range(len(flags))]
    _, lean, _ = _train(EAGER, steps=2)  # lean checkpointing is off on the CPU (no memory limit)
    for key in plain:
        assert torch.allclose(lean[key], plain[key], atol=1e-5, rtol=1e-4)


def test_checkpointing_plan_follows_the_memory_estimate():
    from lorarun.image.engine_config import EngineConfig

    cfg = EngineConfig.from_dict(
        {
            "job_id": "j",
            "output_dir": "o",
            "output_name": "n",
            "model": {"family": "sdxl", "base": "x"},
            "dataset": {"resolution": 1024},
            "training": {"batch_size": 4, "gradient_checkpointing": True, "network_train_unet_only": True},
        }
    )
    assert plan(cfg, 80.0, 7)[0] == 0  # fits an 80 GB card without: the asked-for checkpointing is skipped
    assert plan(cfg, None, 7)[0] == 0
    every, why = plan(cfg, 40.0, 7)  # ~46 GB without, ~37 with all blocks: some blocks
    assert every in (2, 3, 4, 1) and "every" in why
    assert plan(cfg, 10.0, 7)[0] == 1


def test_master_optimizer_state_round_trips():
    _, _, unet = _train(EAGER, torch.bfloat16, steps=2)
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    opt = MasterWeightsOptimizer(
        [{"params": params, "lr": 1e-3}],
        lambda g: torch.optim.AdamW(g, lr=1e-3),
        master=True,
        flat=True,
        dtype=torch.bfloat16,
    )
    opt.inner.param_groups[0]["params"][0].add_(0.125)
    saved = opt.state_dict()
    other = MasterWeightsOptimizer(
        [{"params": params, "lr": 1e-3}],
        lambda g: torch.optim.AdamW(g, lr=1e-3),
        master=True,
        flat=True,
        dtype=torch.bfloat16,
    )
    other.load_state_dict(saved)
    assert torch.equal(other.inner.param_groups[0]["params"][0], opt.inner.param_groups[0]["params"][0])
    with pytest.raises(RuntimeError, match="different training step"):
        other.load_state_dict(torch.optim.AdamW(params).state_dict())
    sched = torch.optim.lr_scheduler.LambdaLR(other, lambda s: 0.5)
    assert other.param_groups[0]["lr"] == pytest.approx(5e-4) and sched.get_last_lr() == [5e-4]


def test_decision_rules():
    assert decide("auto", (), cuda=True, world=1, mixed="bf16", optimizer="AdamW").options == FastOptions()
    assert decide("auto", (), cuda=False, world=1, mixed="no", optimizer="AdamW").options is None
    assert decide("auto", (), cuda=True, world=2, mixed="bf16", optimizer="AdamW").options is None
    assert decide("on", (), cuda=True, world=1, mixed="fp16", optimizer="AdamW").options is None
    assert decide("off", (), cuda=True, world=1, mixed="bf16", optimizer="AdamW").options is None
    cpu = decide("on", ("compile",), cuda=False, world=1, mixed="no", optimizer="Adafactor").options
    assert cpu.active() == ["fused_lora", "lean_checkpointing"]


@pytest.mark.slow
def test_engine_run_fast_vs_plain_same_losses_and_same_file(tmp_path, dataset, asset_cache):
    """The whole engine (text encoder trained too) with fast_step on (CPU: fp32, fused LoRA + flat optimizer,
    compile off) and off: same step losses, same file keys, shapes, metadata keys and (to rounding) values."""
    runs = {}
    for mode in ("off", "on"):
        tmp = tmp_path / mode
        tmp.mkdir()
        cfg = engine_config(
            tmp,
            dataset,
            "sd15",
            sample={"grid_strengths": [], "grid_seeds": []},
            training={"fast_step": mode, "fast_step_off": ["compile"], "save_every_n_epochs": None},
        )
        result = run_engine(write_config(tmp, cfg))
        assert result.returncode == 0, result.stderr[-3000:]
        runs[mode] = (read_events(tmp / "out"), tmp / "out" / "tiny.safetensors")
    (plain_events, plain_file), (fast_events, fast_file) = runs["off"], runs["on"]
    assert next(e for e in fast_events if e["event"] == "started")["fast_step"].startswith("fast step:")
    fast_note = next(e for e in fast_events if e["event"] == "fast_step")
    assert fast_note["fused_lora_layers"] > 0 and "compile" not in fast_note["levers"]
    assert not any(e["event"] == "fast_step" for e in plain_events)
    plain_losses = [e["loss"] for e in plain_events if e["event"] == "step"]
    fast_losses = [e["loss"] for e in fast_events if e["event"] == "step"]
    assert len(fast_losses) == len(plain_losses) > 0
    assert fast_losses == pytest.approx(plain_losses, rel=1e-4, abs=1e-6)
    with safe_open(str(plain_file), "pt") as a, safe_open(str(fast_file), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert set(a.metadata()) == set(b.metadata())
        for key in a.keys():
            x, y = a.get_tensor(key), b.get_tensor(key)
            assert x.dtype == y.dtype and x.shape == y.shape
            assert torch.allclose(x.float(), y.float(), atol=2e-3, rtol=1e-2), key


def test_largest_batch_from_a_linear_memory_line():
    from lorarun.image.engine.fast.autobatch import OOM, largest_batch

    calls = []

    def peak(batch):  # 3 GiB fixed + 1.25 GiB per sample, and a card that really has 20 GiB
        calls.append(batch)
        if 3 + 1.25 * batch > 20:
            raise OOM("CUDA out of memory")
        return 3 + 1.25 * batch

    pick = largest_batch(peak, 18.0)
    assert pick.batch == 12 and pick.checked_peak_gib == 18.0 and calls == [1, 2, 12]
    assert largest_batch(peak, 100.0, cap=64).batch < 64  # the line says 77: the OOM steps it down
    assert largest_batch(peak, 100.0, cap=8).batch == 8


def test_fast_step_config_fields_are_checked():
    from lorarun.image.engine_config import EngineConfig
    from lorarun.image.schema import ConfigError

    base = {"job_id": "j", "output_dir": "o", "output_name": "n"}
    EngineConfig.from_dict({**base, "training": {"fast_step": "on", "fast_step_off": ["compile"]}}).validate()
    with pytest.raises(ConfigError, match="training.fast_step: use one of auto, on, off"):
        EngineConfig.from_dict({**base, "training": {"fast_step": "yes"}}).validate()
    with pytest.raises(ConfigError, match="fast_step_off: unknown lever 'graphs'"):
        EngineConfig.from_dict({**base, "training": {"fast_step_off": ["graphs"]}}).validate()


def test_layers_with_hooks_keep_peft_forward_and_the_same_math():
    """kohya's LoRA dropout is a forward hook on lora_A (engine/lora.py): a fused layer would skip it."""
    from lorarun.image.engine.fast.fused_lora import fusable, fuse_lora_layers

    def doubled(module, inputs, output):
        return output * 2

    results = []
    for fuse in (False, True):
        unet, _ = _unet(torch.float32)
        hooked = next(m for m in unet.modules() if fusable(m))
        hooked.lora_A["default"].register_forward_hook(doubled)
        assert not fusable(hooked)
        if fuse:
            assert fuse_lora_layers(unet) > 0 and not hasattr(hooked, "_peft_forward")
        lat, enc = _inputs()
        results.append(unet(lat, torch.tensor([10, 500]), enc).sample)
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_in_place_weight_edits_keep_fp32_weights():
    """scale_weight_norms edits the model's LoRA weights after the step: no master copy may overwrite them."""
    from lorarun.image.engine.fast.trainer_glue import decide_for
    from lorarun.image.engine_config import EngineConfig

    base = {"job_id": "j", "output_dir": "o", "output_name": "n"}
    plain = EngineConfig.from_dict(base)
    normed = EngineConfig.from_dict({**base, "training": {"scale_weight_norms": 1.0}})
    kw = dict(cuda=True, world=1, mixed="bf16", optimizer_name="AdamW")
    assert decide_for(plain, **kw).options.master_weights
    assert not decide_for(normed, **kw).options.master_weights and decide_for(normed, **kw).options.flat_optimizer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_resume_state_of_the_fast_step_continues_the_same_run(tmp_path, dtype):
    """Through engine/state.py as the trainer does it: save after 2 steps, load into a fresh model and optimizer,
    2 more steps → the same weights as 4 uninterrupted steps (the fp32 masters travel in the optimizer state)."""
    from lorarun.image.engine import state
    from lorarun.image.engine.lora import load_lora_state_dict

    lat, enc = _inputs()

    def setup():
        unet, params = _unet(dtype)
        prepared = prepare_fast(
            unet,
            [{"params": params, "lr": 1e-3}],
            lambda g: torch.optim.AdamW(g, lr=1e-3),
            EAGER,
            weight_dtype=dtype,
            num_shapes=1,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(prepared.optimizer, lambda s: 1.0 / (1 + s))
        return unet, prepared, sched, torch.Generator().manual_seed(5)

    def steps(prepared, sched, gen, n):
        for _ in range(n):
            loss = diffusion_loss(
                prepared.unet, lat, enc, None, None, NoiseSchedule.kohya("cpu"), gen, weight_dtype=dtype
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(prepared.clip_params, 1.0)
            prepared.optimizer.step()
            sched.step()
            prepared.optimizer.zero_grad()

    unet, prepared, sched, gen = setup()
    steps(prepared, sched, gen, 2)
    state.stage_rank(tmp_path, 2, 0, gen)
    lora = prepared.full_precision(lora_state_dict(unet))
    state.finalise(tmp_path, state.Progress(2, 0, 2, "f"), lora, prepared.optimizer, sched)
    steps(prepared, sched, gen, 2)
    straight = {k: v.float().clone() for k, v in prepared.full_precision(lora_state_dict(unet)).items()}

    unet, prepared, sched, gen = setup()
    folder, _ = state.find_latest(tmp_path)
    load_lora_state_dict(unet, state.load(folder, 0, prepared.optimizer, sched, gen))
    steps(prepared, sched, gen, 2)
    resumed = prepared.full_precision(lora_state_dict(unet))
    for key in straight:
        assert torch.equal(resumed[key].float(), straight[key]), key
