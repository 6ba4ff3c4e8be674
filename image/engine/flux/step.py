"""The Flux flow-matching step, as kohya's `flux_train_network.py` / `flux_train_utils.py` compute it.

x_t = (1 - t)·x_0 + t·ε; the transformer predicts the velocity ε - x_0 (`model_prediction_type raw`); loss = MSE.
Timestep sampling (`flux_train_utils.get_noisy_model_input_and_timesteps`):
  uniform     t ~ U(0, 1)
  sigmoid     t = σ(sigmoid_scale · n), n ~ N(0, 1)                              (x-flux)
  shift       t = σ(sigmoid_scale · n), then s·t / (1 + (s - 1)·t) with s = discrete_flow_shift
  sigma       t ~ U(0, 1) shifted by s                                          (the scheduler path with shift s)
  flux_shift  t = σ(sigmoid_scale · n), then BFL's resolution-dependent shift: μ interpolated linearly from 0.5 at
              256 packed tokens to 1.15 at 4096, t' = e^μ / (e^μ + 1/t - 1)   (`time_shift(mu, 1.0, t)`)
Latents are packed 2×2 into tokens of 64 channels with 3-axis position ids (FluxPipeline's `_pack_latents`,
`_prepare_latent_image_ids`); text ids are zeros. The transformer takes t and the guidance in [0, 1]-scale units
(diffusers multiplies both by 1000 inside).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, c4 = tokens.shape
    x = tokens.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, h, w)


def latent_image_ids(h: int, w: int, device, dtype=torch.float32) -> torch.Tensor:
    """(h/2 · w/2, 3): (0, row, column) of each packed token."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def auto_shift_mu(image_tokens: int) -> float:
    """BFL's `get_lin_function(x1=256, y1=0.5, x2=4096, y2=1.15)`."""
    m = (1.15 - 0.5) / (4096 - 256)
    return 0.5 + m * (image_tokens - 256)


def sample_t(
    bsz: int,
    sampling: str,
    *,
    shift: float,
    sigmoid_scale: float,
    image_tokens: int,
    generator: torch.Generator | None,
    device,
) -> torch.Tensor:
    if sampling == "uniform":
        return torch.rand((bsz,), generator=generator, device=device)
    if sampling == "sigma":
        t = torch.rand((bsz,), generator=generator, device=device)
        return shift * t / (1 + (shift - 1) * t)
    t = torch.sigmoid(sigmoid_scale * torch.randn((bsz,), generator=generator, device=device))
    if sampling == "sigmoid":
        return t
    if sampling == "shift":
        return shift * t / (1 + (shift - 1) * t)
    if sampling == "flux_shift":
        mu = math.exp(auto_shift_mu(image_tokens))
        return mu / (mu + (1 / t - 1))
    raise ValueError(f"unknown timestep sampling {sampling!r}")


def flow_loss(
    transformer,
    latents: torch.Tensor,
    t5: torch.Tensor,
    pooled: torch.Tensor,
    t5_mask: torch.Tensor | None,
    loss_weight: torch.Tensor | None,
    generator: torch.Generator | None,
    *,
    sampling: str,
    shift: float,
    sigmoid_scale: float,
    guidance: float | None,
    weight_dtype: torch.dtype = torch.float32,
    autocast=None,
) -> torch.Tensor:
    """One micro-batch: latents (B, 16, h, w) already shifted and scaled; t5 (B, L, D); pooled (B, 768)."""
    from contextlib import nullcontext

    device = latents.device
    bsz, _, h, w = latents.shape
    noise = torch.randn(latents.shape, generator=generator, device=device)
    t = sample_t(
        bsz,
        sampling,
        shift=shift,
        sigmoid_scale=sigmoid_scale,
        image_tokens=(h // 2) * (w // 2),
        generator=generator,
        device=device,
    )
    tb = t.view(-1, 1, 1, 1)
    noisy = (1 - tb) * latents + tb * noise
    target = noise - latents
    img_ids = latent_image_ids(h, w, device)
    txt_ids = torch.zeros(t5.shape[1], 3, device=device)
    kwargs = {}
    if t5_mask is not None:
        # joint attention runs over [text, image]: mask padded text tokens, keep every image token
        mask = torch.cat([t5_mask.bool(), torch.ones(bsz, img_ids.shape[0], dtype=torch.bool, device=device)], 1)
        kwargs["joint_attention_kwargs"] = {"attention_mask": mask[:, None, None, :]}
    g = torch.full((bsz,), float(guidance), device=device) if guidance is not None else None
    with autocast if autocast is not None else nullcontext():
        pred = transformer(
            hidden_states=pack_latents(noisy).to(weight_dtype),
            encoder_hidden_states=t5.to(weight_dtype),
            pooled_projections=pooled.to(weight_dtype),
            timestep=t.to(weight_dtype),
            img_ids=img_ids,
            txt_ids=txt_ids,
            guidance=g.to(weight_dtype) if g is not None else None,
            return_dict=False,
            **kwargs,
        )[0]
    pred = unpack_latents(pred.float(), h, w)
    loss = F.mse_loss(pred, target.float(), reduction="none").mean(dim=(1, 2, 3))
    if loss_weight is not None:
        loss = loss * loss_weight
    return loss.mean()
