"""Each kohya option the engine implements, checked against kohya sd-scripts' own definition (transcribed in
`kohya_reference.py`) on small CPU tensors, with the same random numbers on both sides."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from lorarun.image.engine import step  # noqa: E402
from lorarun.image.engine.step import LossOptions, NoiseSchedule  # noqa: E402

from . import kohya_reference as kohya  # noqa: E402


def kohya_scheduler(zero_terminal_snr=False):
    """The DDPMScheduler kohya's train_network.get_noise_scheduler builds, with its all_snr."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, clip_sample=False
    )
    kohya.prepare_scheduler_for_custom_training(sched)
    if zero_terminal_snr:
        kohya.fix_noise_scheduler_betas_for_zero_terminal_snr(sched)
    return sched


def kohya_args(**kw):
    base = dict(
        noise_offset=None,
        noise_offset_random_strength=False,
        adaptive_noise_scale=None,
        multires_noise_iterations=None,
        multires_noise_discount=0.3,
        ip_noise_gamma=None,
        ip_noise_gamma_random_strength=False,
        loss_type="l2",
        huber_c=0.1,
        huber_schedule="snr",
        huber_scale=1.0,
        min_snr_gamma=None,
        debiased_estimation_loss=False,
        min_timestep=None,
        max_timestep=None,
        scale_v_pred_loss_like_noise_pred=False,
        v_pred_like_loss=None,
    )
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.mark.parametrize("ztsnr", [False, True])
def test_noise_schedule_matches_kohya_scheduler(ztsnr):
    sched = kohya_scheduler(ztsnr)
    ours = NoiseSchedule.kohya("cpu", zero_terminal_snr=ztsnr)
    assert torch.allclose(ours.alphas_cumprod, sched.alphas_cumprod.float(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(ours.snr, sched.all_snr.float(), rtol=1e-4)  # SNR weights keep the original schedule
    if ztsnr:
        assert ours.alphas_cumprod[-1] == 0 and ours.sqrt_one_minus_alpha[-1] == 1


def test_pyramid_noise_matches_kohya():
    base = torch.randn(2, 4, 16, 12, generator=torch.Generator().manual_seed(1))
    ours = step.pyramid_noise_like(base.clone(), 6, 0.3, torch.Generator().manual_seed(5))
    ref = kohya.pyramid_noise_like(base.clone(), "cpu", 6, 0.3, g=torch.Generator().manual_seed(5))
    assert torch.allclose(ours, ref, atol=1e-6)
    assert ours.std().item() == pytest.approx(1.0, abs=1e-5)


OPTION_SETS = [
    dict(),
    dict(noise_offset=0.1),
    dict(noise_offset=0.1, noise_offset_random_strength=True, adaptive_noise_scale=0.05),
    dict(multires_noise_iterations=6, multires_noise_discount=0.3),
    dict(ip_noise_gamma=0.1),
    dict(ip_noise_gamma=0.1, ip_noise_gamma_random_strength=True, noise_offset=0.05),
    dict(loss_type="l1", min_snr_gamma=5.0),
    dict(loss_type="huber", huber_schedule="snr", huber_c=0.1),
    dict(loss_type="huber", huber_schedule="exponential", huber_c=0.2, huber_scale=2.0),
    dict(loss_type="smooth_l1", huber_schedule="constant", huber_c=0.3, huber_scale=0.5),
    dict(debiased_estimation_loss=True),
    dict(
        debiased_estimation_loss=True,
        min_snr_gamma=5.0,
        multires_noise_iterations=4,
        ip_noise_gamma=0.05,
        loss_type="huber",
    ),
    dict(min_timestep=200, max_timestep=800),
    dict(max_timestep=10, min_snr_gamma=5.0),
    dict(scale_v_pred_loss_like_noise_pred=True, min_snr_gamma=5.0),
    dict(v_pred_like_loss=0.2, debiased_estimation_loss=True),
]


class RecordingUNet(torch.nn.Module):
    """A fixed conv as the 'UNet', recording what it was given."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, std=0.2, generator=torch.Generator().manual_seed(3))
        self.seen = []

    def forward(self, x, t, hidden, added_cond_kwargs=None):
        self.seen.append((x.clone(), t.clone()))
        return SimpleNamespace(sample=self.conv(x))


@pytest.mark.parametrize("v_prediction", [False, True])
@pytest.mark.parametrize("ztsnr", [False, True])
@pytest.mark.parametrize("opts", OPTION_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain")
def test_diffusion_loss_matches_kohyas_loss(opts, ztsnr, v_prediction):
    """The whole step against kohya's train_network.process_batch path: noise, timesteps, add_noise (diffusers'
    DDPMScheduler with kohya's fixes), target, conditional_loss, mean, loss weights, post_process_loss, mean."""
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    weights = torch.tensor([1.0, 0.5, 1.0])
    unet = RecordingUNet()
    ours = step.diffusion_loss(
        unet,
        latents,
        torch.zeros(3, 77, 8),
        None,
        weights,
        NoiseSchedule.kohya("cpu", ztsnr),
        torch.Generator().manual_seed(11),
        v_prediction=v_prediction,
        options=LossOptions(**opts),
    )
    ((noisy_ours, t_ours),) = unet.seen

    args = kohya_args(**opts)
    sched = kohya_scheduler(ztsnr)
    noise, noisy, timesteps = kohya.get_noise_noisy_latents_and_timesteps(
        args, sched, latents, g=torch.Generator().manual_seed(11)
    )
    assert torch.equal(timesteps, t_ours)
    assert torch.allclose(noisy.float(), noisy_ours, atol=1e-5)
    target = sched.get_velocity(latents, noise, timesteps) if v_prediction else noise
    pred = unet.conv(noisy.float())
    huber_c = kohya.get_huber_threshold_if_needed(args, timesteps, sched)
    loss = kohya.conditional_loss(pred.float(), target.float(), args.loss_type, "none", huber_c)
    loss = loss.mean(dim=[1, 2, 3]) * weights
    if args.min_snr_gamma:
        loss = kohya.apply_snr_weight(loss, timesteps, sched, args.min_snr_gamma, v_prediction)
    if args.scale_v_pred_loss_like_noise_pred:
        loss = kohya.scale_v_prediction_loss_like_noise_prediction(loss, timesteps, sched)
    if args.v_pred_like_loss:
        loss = kohya.add_v_prediction_like_loss(loss, timesteps, sched, args.v_pred_like_loss)
    if args.debiased_estimation_loss:
        loss = kohya.apply_debiased_estimation(loss, timesteps, sched, v_prediction)
    assert ours.item() == pytest.approx(loss.mean().item(), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("schedule", ["constant", "exponential", "snr"])
def test_huber_threshold_matches_kohya(schedule):
    timesteps = torch.tensor([0, 1, 250, 500, 999])
    args = kohya_args(loss_type="huber", huber_schedule=schedule, huber_c=0.15, huber_scale=1.5)
    ref = kohya.get_huber_threshold_if_needed(args, timesteps, kohya_scheduler())
    ours = step.huber_threshold(LossOptions(**vars(args)), timesteps, NoiseSchedule.kohya("cpu"))
    assert torch.allclose(ours.float(), ref.float(), rtol=1e-5)
    assert step.huber_threshold(LossOptions(), timesteps, NoiseSchedule.kohya("cpu")) is None  # l2: none


def test_lora_dropouts_match_kohya_lora_module():
    """A peft LoRA layer with our hook computes what kohya's LoRAModule.forward computes, dropouts included
    (same global RNG draws), for a Linear on tokens and a 3x3 Conv2d."""
    from peft import LoraConfig, inject_adapter_in_model

    from lorarun.image.engine.lora import ADAPTER, LoraDropout, add_dropout_hooks

    cases = [
        (torch.nn.Linear(6, 5), torch.randn(2, 7, 6)),
        (torch.nn.Conv2d(3, 5, 3, padding=1), torch.randn(2, 3, 6, 6)),
    ]
    for layer, x in cases:
        model = torch.nn.Sequential()
        model.add_module("target", layer)
        org = type(layer)(
            *([layer.in_features, layer.out_features] if isinstance(layer, torch.nn.Linear) else [3, 5, 3]),
            **({} if isinstance(layer, torch.nn.Linear) else {"padding": 1}),
        )
        org.load_state_dict(layer.state_dict())
        inject_adapter_in_model(LoraConfig(r=4, lora_alpha=2, target_modules=["target"]), model, adapter_name=ADAPTER)
        lora = model.target
        torch.nn.init.normal_(lora.lora_B[ADAPTER].weight)  # peft starts B at zero; make the LoRA do something
        drop = LoraDropout(dropout=0.3, rank_dropout=0.25, module_dropout=0.2)
        add_dropout_hooks(model, drop)
        ref = kohya.LoRAModule(org, 4, 2, dropout=0.3, rank_dropout=0.25, module_dropout=0.2)
        ref.lora_down.weight.data.copy_(lora.lora_A[ADAPTER].weight.data)
        ref.lora_up.weight.data.copy_(lora.lora_B[ADAPTER].weight.data)
        skipped = 0
        for seed in range(20):
            torch.manual_seed(seed)
            ours = model(x)
            torch.manual_seed(seed)
            theirs = ref(x)
            assert torch.allclose(ours, theirs, atol=1e-5), seed
            skipped += torch.allclose(ours, org(x), atol=1e-6)
        assert 0 < skipped < 20  # module dropout happened sometimes, not always
        model.eval()
        ref.eval()
        assert torch.allclose(model(x), ref(x), atol=1e-5)  # no dropout at inference


def test_max_norm_regularization_matches_kohya():
    from peft import LoraConfig, inject_adapter_in_model

    from lorarun.image.engine.lora import ADAPTER, apply_max_norm_regularization

    model = torch.nn.Module()
    model.lin = torch.nn.Linear(8, 6)
    model.conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    model.pw = torch.nn.Conv2d(4, 6, 1)
    inject_adapter_in_model(
        LoraConfig(r=4, lora_alpha=2, target_modules=["lin", "conv", "pw"]), model, adapter_name=ADAPTER
    )
    g = torch.Generator().manual_seed(0)
    kohya_sd = {}
    for name in ("lin", "conv", "pw"):
        layer = getattr(model, name)
        for which, key in (("lora_A", "lora_down"), ("lora_B", "lora_up")):
            w = getattr(layer, which)[ADAPTER].weight
            w.data = torch.randn(w.shape, generator=g) * (3.0 if name != "pw" else 0.05)
            kohya_sd[f"{name}.{key}.weight"] = w.data.clone()
        kohya_sd[f"{name}.alpha"] = torch.tensor(2.0)
    ref_scaled, ref_mean, ref_max = kohya.apply_max_norm_regularization(kohya_sd, 1.0)
    scaled, mean, top = apply_max_norm_regularization([model], 1.0)
    assert int(scaled) == ref_scaled == 2  # the small 1x1 LoRA was left alone
    assert float(mean) == pytest.approx(ref_mean, rel=1e-5) and float(top) == pytest.approx(ref_max, rel=1e-5)
    for name in ("lin", "conv", "pw"):
        layer = getattr(model, name)
        assert torch.allclose(layer.lora_A[ADAPTER].weight, kohya_sd[f"{name}.lora_down.weight"], atol=1e-6)
        assert torch.allclose(layer.lora_B[ADAPTER].weight, kohya_sd[f"{name}.lora_up.weight"], atol=1e-6)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_locon_targets_dims_and_alphas_match_kohyas_create_modules(family):
    """LoCon on the tiny UNet: the set of LoRA modules, each one's rank and alpha, and the kohya name of each, as
    kohya's create_modules makes them on the same diffusers-layout UNet (SD1.x: kohya's UNet is diffusers')."""
    from peft.tuners.lora import LoraLayer

    from lorarun.image.engine.kohya_keys import unet_module_name
    from lorarun.image.engine.lora import add_unet_lora, lora_state_dict, unwrap
    from lorarun.image.engine.save import kohya_state_dict
    from lorarun.image.engine.tiny import build_tiny_pipeline

    unet = build_tiny_pipeline(family).unet
    expected = kohya.create_unet_modules(unet, 4, 2.0, conv_lora_dim=3, conv_alpha=1.5)
    add_unet_lora(unet, 4, 2.0, conv_dim=3, conv_alpha=1.5)
    ours = {}
    for path, module in unwrap(unet).named_modules():
        if isinstance(module, LoraLayer):
            ours["lora_unet_" + path.replace(".", "_")] = (module.r["default"], module.lora_alpha["default"])
    assert ours == expected
    assert any(dim == 3 for dim, _ in ours.values()) and any(dim == 4 for dim, _ in ours.values())
    lpb = unet.config.layers_per_block
    saved = kohya_state_dict([("unet", lora_state_dict(unet))], family, 2.0, torch.float32, lpb, conv_alpha=1.5)
    for diffusers_name, (dim, alpha) in expected.items():
        path = next(p for p, _ in unet.named_modules() if "lora_unet_" + p.replace(".", "_") == diffusers_name)
        name = unet_module_name(path, family, lpb)
        assert saved[f"{name}.alpha"].item() == alpha and saved[f"{name}.lora_down.weight"].shape[0] == dim


def test_caption_processing_matches_kohya():
    from lorarun.image.engine.data import process_caption

    captions = [
        "sks, red, circle, plain, background",
        "sks girl, blue ||| smile, hat, outdoors ||| masterpiece, best",
        "a, b, , c,",
        "solo ||| one, two",
    ]
    settings = [
        dict(
            shuffle_caption=s,
            keep_tokens=k,
            keep_tokens_separator=sep,
            caption_tag_dropout_rate=tr,
            caption_dropout_rate=dr,
        )
        for s in (False, True)
        for k in (0, 2)
        for sep in ("", "|||")
        for tr in (0.0, 0.3)
        for dr in (0.0, 0.2)
    ]
    for caption in captions:
        for kw in settings:
            for seed in range(5):
                ref = kohya.process_caption_tags(caption, rng=random.Random(seed), **kw)
                ours = process_caption(
                    caption,
                    random.Random(seed),
                    shuffle=kw["shuffle_caption"],
                    keep_tokens=kw["keep_tokens"],
                    dropout_rate=kw["caption_dropout_rate"],
                    tag_dropout_rate=kw["caption_tag_dropout_rate"],
                    keep_tokens_separator=kw["keep_tokens_separator"],
                )
                assert ours == ref, (caption, kw, seed)


def test_save_last_n_epochs_matches_kohya():
    from lorarun.image.engine.kohya_extras import checkpoint_to_remove

    for every in (1, 2, 3):
        for last_n in (None, 1, 2, 5):
            for epoch in range(1, 20):
                ref = kohya.get_remove_epoch_no(every, last_n, epoch)
                ours = checkpoint_to_remove(epoch, every, last_n)
                assert ours == (ref if ref else None)  # epoch 0 has no file; we return None for it


def test_schedulers_match_transformers_as_kohya_calls_them():
    """kohya's get_scheduler_fix calls transformers' scheduler functions; ours give the same multipliers."""
    from transformers.optimization import (
        get_cosine_schedule_with_warmup,
        get_cosine_with_min_lr_schedule_with_warmup,
        get_polynomial_decay_schedule_with_warmup,
    )

    from lorarun.image.engine.optim import build_scheduler

    def lrs(sched, n=120):
        out = []
        for _ in range(n):
            out.append(sched.get_last_lr()[0])
            sched.optimizer.step()
            sched.step()
        return out

    def opt():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)

    cases = [
        # (ours, transformers as kohya calls it)
        (
            lambda: build_scheduler(opt(), "cosine_with_min_lr", 100, 10, 1, 1.0, min_lr_ratio=0.1),
            lambda: get_cosine_with_min_lr_schedule_with_warmup(opt(), 10, 100, num_cycles=1 / 2, min_lr_rate=0.1),
        ),
        (
            lambda: build_scheduler(opt(), "cosine_with_min_lr", 100, 0, 3, 1.0, min_lr_ratio=0.2),
            lambda: get_cosine_with_min_lr_schedule_with_warmup(opt(), 0, 100, num_cycles=3 / 2, min_lr_rate=0.2),
        ),
        (
            lambda: build_scheduler(opt(), "cosine_with_min_lr", 100, 5, 1, 1.0, args=("min_lr=0.002",)),
            lambda: get_cosine_with_min_lr_schedule_with_warmup(opt(), 5, 100, num_cycles=1 / 2, min_lr=0.002),
        ),
        (
            lambda: build_scheduler(opt(), "cosine", 100, 10, 1, 1.0, args=("num_cycles=1.5",)),
            lambda: get_cosine_schedule_with_warmup(opt(), 10, 100, num_cycles=1.5),
        ),
        (
            lambda: build_scheduler(opt(), "polynomial", 100, 10, 1, 2.0, args=("lr_end=0.001",)),
            lambda: get_polynomial_decay_schedule_with_warmup(opt(), 10, 100, lr_end=0.001, power=2.0),
        ),
    ]
    for ours, theirs in cases:
        assert lrs(ours()) == pytest.approx(lrs(theirs()), rel=1e-6, abs=1e-12)


def test_scheduler_args_refused_with_one_line():
    from lorarun.image.engine_config import TrainingConfig
    from lorarun.image.schema import ConfigError

    with pytest.raises(ConfigError, match="lr_scheduler_args: 'foo' is not an argument of cosine"):
        TrainingConfig(lr_scheduler="cosine", lr_scheduler_args=("foo=1",)).validate()
    with pytest.raises(ConfigError, match="cosine_with_min_lr needs exactly one"):
        TrainingConfig(lr_scheduler="cosine_with_min_lr").validate()
    with pytest.raises(ConfigError, match="finite number"):
        TrainingConfig(lr_scheduler="cosine", lr_scheduler_args=("num_cycles=nan_text",)).validate()


@pytest.mark.parametrize(
    "name, package_class",
    [
        ("DAdaptAdam", "dadaptation.DAdaptAdam"),
        ("DAdaptLion", "dadaptation.DAdaptLion"),
        ("Lion", "lion_pytorch.Lion"),
        ("Prodigy", "prodigyopt.Prodigy"),
    ],
)
def test_optimizers_come_from_their_packages_and_step(name, package_class):
    import importlib

    from lorarun.image.engine.optim import build_optimizer, resolve_optimizer

    module_name, class_name = package_class.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    assert resolve_optimizer(name, cuda=False) == name
    p = torch.nn.Parameter(torch.ones(4))
    opt = build_optimizer(name, [{"params": [p], "lr": 1.0}], 1.0, ("weight_decay=0.0",), cuda=False)
    assert type(opt) is cls and opt.defaults["weight_decay"] == 0.0
    (p**2).sum().backward()
    opt.step()
    assert not torch.equal(p.detach(), torch.ones(4))


@pytest.mark.parametrize("name", ["PagedAdamW8bit", "Lion8bit", "PagedLion8bit", "AdamW8bit"])
def test_bitsandbytes_optimizers_need_cuda(name):
    from lorarun.image.engine.optim import resolve_optimizer
    from lorarun.image.schema import ConfigError

    with pytest.raises(ConfigError, match=f"{name} needs a CUDA GPU"):
        resolve_optimizer(name, cuda=False)


def test_adaptive_optimizers_warn_like_kohya():
    from lorarun.image.engine.optim import adaptive_lr_warning

    assert "expect about 1.0" in adaptive_lr_warning("Prodigy", [1e-4])
    assert "only the first" in adaptive_lr_warning("DAdaptAdam", [1.0, 0.5])
    assert adaptive_lr_warning("DAdaptAdam", [1.0]) is None and adaptive_lr_warning("AdamW", [1e-4]) is None


def test_fast_step_leaves_out_the_levers_a_kohya_option_needs_off():
    """The fused LoRA linear never calls the down projection (where kohya's dropouts act), and fp32 masters would
    overwrite max-norm's in-place scaling: those levers are off when the options are on, the rest stay."""
    from lorarun.image.engine.fast.trainer_glue import decide_for
    from lorarun.image.engine_config import EngineConfig, TrainingConfig

    def levers(**training):
        cfg = EngineConfig(job_id="j", output_dir="o", output_name="x", training=TrainingConfig(**training))
        return set(decide_for(cfg, cuda=True, world=1, mixed="bf16", optimizer_name="AdamW").options.active())

    plain = levers()
    assert {"fused_lora", "master_weights", "compile"} <= plain
    assert levers(network_dropout=0.1) == plain - {"fused_lora", "compile", "cuda_graphs"}
    assert levers(module_dropout=0.1) == plain - {"fused_lora", "compile", "cuda_graphs"}
    assert levers(scale_weight_norms=1.0) == plain - {"master_weights"}
    assert levers(conv_dim=4, loss_type="huber", multires_noise_iterations=6) == plain


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_locon_names_on_the_real_unet_are_comfyuis_keys(family):
    """The real SD1.5 / SDXL UNet (from the shipped configs, on the meta device) with LoCon: every module lorarun
    saves has a name ComfyUI's key map knows, and that name patches the very layer the LoRA was trained on."""
    from diffusers import UNet2DConditionModel
    from peft.tuners.lora import LoraLayer

    from lorarun.image.engine.assets import CONFIGS
    from lorarun.image.engine.kohya_keys import plan_modules
    from lorarun.image.engine.lora import add_unet_lora

    from .comfy_unet_keymap import SD15, SDXL, lora_key_map

    config = UNet2DConditionModel.load_config(str(CONFIGS / family / "unet"))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
        add_unet_lora(unet, 4, 2.0, conv_dim=2, conv_alpha=1.0)
    peft_keys = [
        f"{path}.{which}.weight"
        for path, m in unet.named_modules()
        if isinstance(m, LoraLayer)
        for which in ("lora_A", "lora_B")
    ]
    modules = plan_modules(peft_keys, "unet", family, unet.config.layers_per_block)
    comfy = lora_key_map(SD15 if family == "sd15" else SDXL)
    assert len(modules) > 100 and any(m.path.endswith("resnets.0.conv1") for m in modules)
    wrong = {m.name: (m.path, comfy.get(m.name)) for m in modules if comfy.get(m.name) != m.path + ".weight"}
    assert not wrong, list(wrong.items())[:5]
