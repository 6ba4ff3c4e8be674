"""The math of one training micro-step, free of the trainer's bookkeeping, so the trainer, the benchmark and a later
torch.compile all run the same function. No host syncs in here: noise and timesteps are drawn on the device."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoiseSchedule:
    """kohya's training schedule (DDPM, scaled-linear betas 0.00085 → 0.012, 1000 steps), on the device."""
    sqrt_alpha: torch.Tensor
    sqrt_one_minus_alpha: torch.Tensor
    snr: torch.Tensor

    @classmethod
    def kohya(cls, device) -> "NoiseSchedule":
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        acp = torch.cumprod(1.0 - betas, dim=0).float().to(device)
        return cls(acp.sqrt(), (1 - acp).sqrt(), acp / (1 - acp))


def diffusion_loss(unet, latents: torch.Tensor, hidden: torch.Tensor, added: dict | None,
                   loss_weight: torch.Tensor | None, schedule: NoiseSchedule, generator: torch.Generator | None, *,
                   v_prediction: bool = False, noise_offset: float | None = None, min_snr_gamma: float | None = None,
                   weight_dtype: torch.dtype = torch.float32, autocast=None,
                   channels_last: bool = False) -> torch.Tensor:
    """kohya's loss: noise the latents at a uniform random timestep, predict ε (or v), per-sample MSE × weight
    (prior_loss_weight for regularisation images) × min-SNR weight, mean over the batch."""
    device = latents.device
    bsz = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device=device)
    if noise_offset:
        # a per-channel constant shift; the shifted noise is also the target
        noise = noise + noise_offset * torch.randn((bsz, latents.shape[1], 1, 1), generator=generator, device=device)
    timesteps = torch.randint(0, 1000, (bsz,), generator=generator, device=device)
    a = schedule.sqrt_alpha[timesteps].view(-1, 1, 1, 1)
    s = schedule.sqrt_one_minus_alpha[timesteps].view(-1, 1, 1, 1)
    noisy = a * latents + s * noise
    target = a * noise - s * latents if v_prediction else noise
    if channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    with autocast if autocast is not None else nullcontext():
        pred = unet(noisy.to(weight_dtype), timesteps, hidden.to(weight_dtype), added_cond_kwargs=added).sample
    loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if loss_weight is not None:
        loss = loss * loss_weight
    if min_snr_gamma:
        # kohya apply_snr_weight: min(SNR, γ) / SNR for ε-prediction, / (SNR + 1) for v-prediction
        snr = schedule.snr[timesteps]
        loss = loss * torch.clamp(snr, max=min_snr_gamma) / (snr + 1 if v_prediction else snr)
    return loss.mean()
