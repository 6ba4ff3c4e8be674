"""The math of one training micro-step, free of the trainer's bookkeeping, so the trainer, the benchmark and a later
torch.compile all run the same function. No host syncs in here: noise and timesteps are drawn on the device.

The kohya options that change the noise or the loss follow sd-scripts exactly (functions cited beside each):
noise offset (+ random strength, adaptive scale), multi-resolution (pyramid) noise, input-perturbation noise
(ip_noise_gamma), zero terminal SNR, loss types l2/l1/huber/smooth_l1 with kohya's huber_c schedules, min-SNR and
debiased-estimation weights.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NUM_TRAIN_TIMESTEPS = 1000


def enforce_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """kohya `custom_train_functions.fix_noise_scheduler_betas_for_zero_terminal_snr` (arXiv 2305.08891 alg. 1):
    shift √ᾱ so the last step is 0, rescale so the first is unchanged, back to betas."""
    alphas_bar_sqrt = (1 - betas).cumprod(0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


@dataclass(frozen=True)
class NoiseSchedule:
    """kohya's training schedule (DDPM, scaled-linear betas 0.00085 → 0.012, 1000 steps), on the device."""

    sqrt_alpha: torch.Tensor
    sqrt_one_minus_alpha: torch.Tensor
    snr: torch.Tensor
    alphas_cumprod: torch.Tensor | None = None

    @classmethod
    def kohya(cls, device, zero_terminal_snr: bool = False) -> NoiseSchedule:
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, NUM_TRAIN_TIMESTEPS, dtype=torch.float64) ** 2
        acp = torch.cumprod(1.0 - betas, dim=0).float()
        # kohya computes all_snr (min-SNR / debiased weights) BEFORE fixing the betas (train_network.py
        # get_noise_scheduler), so those weights keep the original SNR; only noising uses the fixed schedule.
        snr = acp / (1 - acp)
        if zero_terminal_snr:
            acp = torch.cumprod(1.0 - enforce_zero_terminal_snr(betas.float()), dim=0)
        return cls(acp.sqrt().to(device), (1 - acp).sqrt().to(device), snr.to(device), acp.to(device))


@dataclass(frozen=True)
class LossOptions:
    """The kohya options of the noise and the loss; defaults are kohya's argparse defaults (all off, l2)."""

    noise_offset: float | None = None
    noise_offset_random_strength: bool = False
    adaptive_noise_scale: float | None = None
    multires_noise_iterations: int | None = None
    multires_noise_discount: float = 0.3
    ip_noise_gamma: float | None = None
    ip_noise_gamma_random_strength: bool = False
    loss_type: str = "l2"
    huber_c: float = 0.1
    huber_schedule: str = "snr"
    huber_scale: float = 1.0
    min_snr_gamma: float | None = None
    debiased_estimation_loss: bool = False
    min_timestep: int | None = None  # timesteps drawn from [min_timestep, max_timestep), kohya's get_timesteps
    max_timestep: int | None = None
    scale_v_pred_loss_like_noise_pred: bool = False
    v_pred_like_loss: float | None = None

    @classmethod
    def from_training(cls, t) -> LossOptions:
        return cls(**{name: getattr(t, name) for name in cls.__dataclass_fields__ if hasattr(t, name)})


def _rand(shape, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def apply_noise_offset(latents, noise, noise_offset, adaptive_noise_scale, generator=None):
    """kohya `custom_train_functions.apply_noise_offset`: a per-(sample, channel) constant shift."""
    if adaptive_noise_scale is not None:
        latent_mean = torch.abs(latents.mean(dim=(2, 3), keepdim=True))
        noise_offset = torch.clamp(noise_offset + adaptive_noise_scale * latent_mean, 0.0, None)
    return noise + noise_offset * torch.randn(
        (latents.shape[0], latents.shape[1], 1, 1), generator=generator, device=latents.device
    )


def pyramid_noise_like(
    noise: torch.Tensor, iterations: int = 6, discount: float = 0.4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """kohya `custom_train_functions.pyramid_noise_like` (multi-resolution noise): add bilinearly upsampled noise at
    random scales r ∈ [2, 4) per level, weighted discount**i, then rescale to unit std. kohya draws r from Python's
    `random`; here it comes from the step's generator so a run is reproducible — same distribution."""
    b, c, w, h = noise.shape  # kohya's names (w, h are really H, W); kept for a line-by-line comparison
    up = torch.nn.Upsample(size=(w, h), mode="bilinear")
    noise = noise.clone()
    for i in range(iterations):
        # r decides tensor shapes, so it is read on the host: one small sync per level, only with this option
        r = float(_rand((), generator, noise.device if generator is None else generator.device)) * 2 + 2
        wn, hn = max(1, int(w / (r**i))), max(1, int(h / (r**i)))
        noise += up(torch.randn(b, c, wn, hn, generator=generator, device=noise.device)) * discount**i
        if wn == 1 or hn == 1:
            break
    return noise / noise.std()


def huber_threshold(opts: LossOptions, timesteps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor | None:
    """kohya `train_util.get_huber_threshold_if_needed`: the per-sample huber_c for huber / smooth_l1."""
    if opts.loss_type not in ("huber", "smooth_l1"):
        return None
    if opts.huber_schedule == "exponential":
        alpha = -math.log(opts.huber_c) / NUM_TRAIN_TIMESTEPS
        return torch.exp(-alpha * timesteps.float()) * opts.huber_scale
    if opts.huber_schedule == "snr":
        acp = schedule.alphas_cumprod if schedule.alphas_cumprod is not None else schedule.sqrt_alpha**2
        a = acp[timesteps]
        sigmas = ((1.0 - a) / a) ** 0.5
        return (1 - opts.huber_c) / (1 + sigmas) ** 2 + opts.huber_c  # kohya applies no huber_scale here
    if opts.huber_schedule == "constant":
        return torch.full(timesteps.shape, opts.huber_c * opts.huber_scale, device=timesteps.device)
    raise ValueError(f"unknown huber_schedule {opts.huber_schedule!r}")


def conditional_loss(
    pred: torch.Tensor, target: torch.Tensor, loss_type: str, huber_c: torch.Tensor | None = None
) -> torch.Tensor:
    """kohya `train_util.conditional_loss` with reduction "none" (element-wise)."""
    if loss_type == "l2":
        return F.mse_loss(pred, target, reduction="none")
    if loss_type == "l1":
        return F.l1_loss(pred, target, reduction="none")
    if loss_type in ("huber", "smooth_l1"):
        c = huber_c.view(-1, *([1] * (pred.ndim - 1)))
        loss = torch.sqrt((pred - target) ** 2 + c**2) - c
        return 2 * c * loss if loss_type == "huber" else 2 * loss
    raise ValueError(f"unknown loss_type {loss_type!r}")


def timestep_weights(
    loss: torch.Tensor, timesteps: torch.Tensor, schedule: NoiseSchedule, opts: LossOptions, v_prediction: bool
) -> torch.Tensor:
    """kohya `post_process_loss`, in its order, on the per-sample loss: min-SNR weight (`apply_snr_weight`),
    v-prediction scaled like noise prediction (`scale_v_prediction_loss_like_noise_prediction`), the v-prediction-like
    term (`add_v_prediction_like_loss`), debiased estimation (`apply_debiased_estimation`)."""
    snr = schedule.snr[timesteps]
    if opts.min_snr_gamma:
        loss = loss * torch.clamp(snr, max=opts.min_snr_gamma) / (snr + 1 if v_prediction else snr)
    if opts.scale_v_pred_loss_like_noise_pred or opts.v_pred_like_loss:
        snr_t = torch.clamp(snr, max=1000)  # kohya get_snr_scale
        scale = snr_t / (snr_t + 1)
        if opts.scale_v_pred_loss_like_noise_pred:
            loss = loss * scale
        if opts.v_pred_like_loss:
            loss = loss + loss / scale * opts.v_pred_like_loss
    if opts.debiased_estimation_loss:
        snr_t = torch.clamp(snr, max=1000)  # kohya's cap: SNR at timestep 0 is ~1e4
        loss = loss * (1 / (snr_t + 1) if v_prediction else 1 / torch.sqrt(snr_t))
    return loss


def make_noise(latents: torch.Tensor, opts: LossOptions, generator: torch.Generator | None) -> torch.Tensor:
    """kohya `get_noise_noisy_latents_and_timesteps`, the noise part: randn, offset, then pyramid noise."""
    device = latents.device
    noise = torch.randn(latents.shape, generator=generator, device=device)
    if opts.noise_offset:
        offset = opts.noise_offset
        if opts.noise_offset_random_strength:
            offset = _rand(1, generator, device) * opts.noise_offset
        noise = apply_noise_offset(latents, noise, offset, opts.adaptive_noise_scale, generator)
    if opts.multires_noise_iterations:
        noise = pyramid_noise_like(noise, opts.multires_noise_iterations, opts.multires_noise_discount, generator)
    return noise


def diffusion_loss(
    unet,
    latents: torch.Tensor,
    hidden: torch.Tensor,
    added: dict | None,
    loss_weight: torch.Tensor | None,
    schedule: NoiseSchedule,
    generator: torch.Generator | None,
    *,
    v_prediction: bool = False,
    noise_offset: float | None = None,
    min_snr_gamma: float | None = None,
    weight_dtype: torch.dtype = torch.float32,
    autocast=None,
    channels_last: bool = False,
    options: LossOptions | None = None,
) -> torch.Tensor:
    """kohya's loss: noise the latents at a uniform random timestep, predict ε (or v), per-sample loss (l2 by
    default) × weight (prior_loss_weight for regularisation images) × min-SNR / debiased weight, mean over the batch.
    `options` carries every kohya noise/loss option; `noise_offset` / `min_snr_gamma` are the older shorthand."""
    opts = options or LossOptions(noise_offset=noise_offset, min_snr_gamma=min_snr_gamma)
    device = latents.device
    bsz = latents.shape[0]
    noise = make_noise(latents, opts, generator)
    low = 0 if opts.min_timestep is None else opts.min_timestep
    high = NUM_TRAIN_TIMESTEPS if opts.max_timestep is None else opts.max_timestep
    timesteps = torch.randint(low, high, (bsz,), generator=generator, device=device)  # validate keeps low < high
    a = schedule.sqrt_alpha[timesteps].view(-1, 1, 1, 1)
    s = schedule.sqrt_one_minus_alpha[timesteps].view(-1, 1, 1, 1)
    noised_with = noise
    if opts.ip_noise_gamma:
        # input perturbation (arXiv 2301.11706): the model input gets extra noise, the target stays `noise`
        strength = opts.ip_noise_gamma
        if opts.ip_noise_gamma_random_strength:
            strength = _rand(1, generator, device) * opts.ip_noise_gamma
        noised_with = noise + strength * torch.randn(latents.shape, generator=generator, device=device)
    noisy = a * latents + s * noised_with
    target = a * noise - s * latents if v_prediction else noise
    if channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    with autocast if autocast is not None else nullcontext():
        pred = unet(noisy.to(weight_dtype), timesteps, hidden.to(weight_dtype), added_cond_kwargs=added).sample
    huber_c = huber_threshold(opts, timesteps, schedule)
    loss = conditional_loss(pred.float(), target.float(), opts.loss_type, huber_c).mean(dim=(1, 2, 3))
    if loss_weight is not None:
        loss = loss * loss_weight
    loss = timestep_weights(loss, timesteps, schedule, opts, v_prediction)
    return loss.mean()
