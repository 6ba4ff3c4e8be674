"""kohya sd-scripts' own definitions, transcribed (commit 48d368fa557731ad0488c07304dfeba8c07910eb, 2026-02-16) so
the engine's versions can be checked against them. Only two things differ from the source, both marked: Python's
`random` / torch's global RNG are replaced by an explicit `random.Random` or `torch.Generator`, drawn in the same
order, so both sides see the same random numbers; and logging is gone.
"""

from __future__ import annotations

import math
import random

import torch

# --- library/custom_train_functions.py ---------------------------------------------------------------------------


def prepare_scheduler_for_custom_training(noise_scheduler):
    alphas_cumprod = noise_scheduler.alphas_cumprod
    alpha = torch.sqrt(alphas_cumprod)
    sigma = torch.sqrt(1.0 - alphas_cumprod)
    noise_scheduler.all_snr = (alpha / sigma) ** 2


def fix_noise_scheduler_betas_for_zero_terminal_snr(noise_scheduler):
    def enforce_zero_terminal_snr(betas):
        alphas = 1 - betas
        alphas_bar = alphas.cumprod(0)
        alphas_bar_sqrt = alphas_bar.sqrt()
        alphas_bar_sqrt_0 = alphas_bar_sqrt[0].clone()
        alphas_bar_sqrt_T = alphas_bar_sqrt[-1].clone()
        alphas_bar_sqrt -= alphas_bar_sqrt_T
        alphas_bar_sqrt *= alphas_bar_sqrt_0 / (alphas_bar_sqrt_0 - alphas_bar_sqrt_T)
        alphas_bar = alphas_bar_sqrt**2
        alphas = alphas_bar[1:] / alphas_bar[:-1]
        alphas = torch.cat([alphas_bar[0:1], alphas])
        betas = 1 - alphas
        return betas

    betas = enforce_zero_terminal_snr(noise_scheduler.betas)
    alphas = 1.0 - betas
    noise_scheduler.betas = betas
    noise_scheduler.alphas = alphas
    noise_scheduler.alphas_cumprod = torch.cumprod(alphas, dim=0)


def apply_snr_weight(loss, timesteps, noise_scheduler, gamma, v_prediction=False):
    snr = torch.stack([noise_scheduler.all_snr[t] for t in timesteps])
    min_snr_gamma = torch.minimum(snr, torch.full_like(snr, gamma))
    if v_prediction:
        snr_weight = torch.div(min_snr_gamma, snr + 1).float().to(loss.device)
    else:
        snr_weight = torch.div(min_snr_gamma, snr).float().to(loss.device)
    return loss * snr_weight


def get_snr_scale(timesteps, noise_scheduler):
    snr_t = torch.stack([noise_scheduler.all_snr[t] for t in timesteps])
    snr_t = torch.minimum(snr_t, torch.ones_like(snr_t) * 1000)
    return snr_t / (snr_t + 1)


def scale_v_prediction_loss_like_noise_prediction(loss, timesteps, noise_scheduler):
    return loss * get_snr_scale(timesteps, noise_scheduler)


def add_v_prediction_like_loss(loss, timesteps, noise_scheduler, v_pred_like_loss):
    scale = get_snr_scale(timesteps, noise_scheduler)
    return loss + loss / scale * v_pred_like_loss


def apply_debiased_estimation(loss, timesteps, noise_scheduler, v_prediction=False):
    snr_t = torch.stack([noise_scheduler.all_snr[t] for t in timesteps])
    snr_t = torch.minimum(snr_t, torch.ones_like(snr_t) * 1000)
    if v_prediction:
        weight = 1 / (snr_t + 1)
    else:
        weight = 1 / torch.sqrt(snr_t)
    return weight * loss


def pyramid_noise_like(noise, device, iterations=6, discount=0.4, *, g: torch.Generator):
    b, c, w, h = noise.shape
    u = torch.nn.Upsample(size=(w, h), mode="bilinear").to(device)
    for i in range(iterations):
        r = float(torch.rand((), generator=g)) * 2 + 2  # source: random.random() * 2 + 2
        wn, hn = max(1, int(w / (r**i))), max(1, int(h / (r**i)))
        noise += u(torch.randn(b, c, wn, hn, generator=g).to(device)) * discount**i  # source: torch.randn(...)
        if wn == 1 or hn == 1:
            break
    return noise / noise.std()


def apply_noise_offset(latents, noise, noise_offset, adaptive_noise_scale, *, g: torch.Generator):
    if noise_offset is None:
        return noise
    if adaptive_noise_scale is not None:
        latent_mean = torch.abs(latents.mean(dim=(2, 3), keepdim=True))
        noise_offset = noise_offset + adaptive_noise_scale * latent_mean
        noise_offset = torch.clamp(noise_offset, 0.0, None)
    return noise + noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=g)


# --- library/train_util.py ---------------------------------------------------------------------------------------


def get_timesteps(min_timestep, max_timestep, b_size, *, g: torch.Generator):
    if min_timestep < max_timestep:
        timesteps = torch.randint(min_timestep, max_timestep, (b_size,), generator=g)  # source: device="cpu"
    else:
        timesteps = torch.full((b_size,), max_timestep)
    return timesteps.long()


def get_noise_noisy_latents_and_timesteps(args, noise_scheduler, latents, *, g: torch.Generator):
    noise = torch.randn(latents.shape, generator=g)  # source: torch.randn_like(latents)
    if args.noise_offset:
        if args.noise_offset_random_strength:
            noise_offset = torch.rand(1, generator=g) * args.noise_offset
        else:
            noise_offset = args.noise_offset
        noise = apply_noise_offset(latents, noise, noise_offset, args.adaptive_noise_scale, g=g)
    if args.multires_noise_iterations:
        noise = pyramid_noise_like(
            noise, latents.device, args.multires_noise_iterations, args.multires_noise_discount, g=g
        )
    b_size = latents.shape[0]
    min_timestep = 0 if args.min_timestep is None else args.min_timestep
    max_timestep = noise_scheduler.config.num_train_timesteps if args.max_timestep is None else args.max_timestep
    timesteps = get_timesteps(min_timestep, max_timestep, b_size, g=g)
    if args.ip_noise_gamma:
        if args.ip_noise_gamma_random_strength:
            strength = torch.rand(1, generator=g) * args.ip_noise_gamma
        else:
            strength = args.ip_noise_gamma
        noisy_latents = noise_scheduler.add_noise(
            latents, noise + strength * torch.randn(latents.shape, generator=g), timesteps
        )
    else:
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
    return noise, noisy_latents, timesteps


def get_huber_threshold_if_needed(args, timesteps, noise_scheduler):
    if not (args.loss_type == "huber" or args.loss_type == "smooth_l1"):
        return None
    b_size = timesteps.shape[0]
    if args.huber_schedule == "exponential":
        alpha = -math.log(args.huber_c) / noise_scheduler.config.num_train_timesteps
        result = torch.exp(-alpha * timesteps) * args.huber_scale
    elif args.huber_schedule == "snr":
        alphas_cumprod = torch.index_select(noise_scheduler.alphas_cumprod, 0, timesteps.cpu())
        sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod) ** 0.5
        result = (1 - args.huber_c) / (1 + sigmas) ** 2 + args.huber_c
        result = result.to(timesteps.device)
    elif args.huber_schedule == "constant":
        result = torch.full((b_size,), args.huber_c * args.huber_scale, device=timesteps.device)
    else:
        raise NotImplementedError
    return result


def conditional_loss(model_pred, target, loss_type, reduction, huber_c=None):
    if loss_type == "l2":
        loss = torch.nn.functional.mse_loss(model_pred, target, reduction=reduction)
    elif loss_type == "l1":
        loss = torch.nn.functional.l1_loss(model_pred, target, reduction=reduction)
    elif loss_type == "huber":
        huber_c = huber_c.view(-1, *([1] * (model_pred.ndim - 1)))
        loss = 2 * huber_c * (torch.sqrt((model_pred - target) ** 2 + huber_c**2) - huber_c)
    elif loss_type == "smooth_l1":
        huber_c = huber_c.view(-1, *([1] * (model_pred.ndim - 1)))
        loss = 2 * (torch.sqrt((model_pred - target) ** 2 + huber_c**2) - huber_c)
    else:
        raise NotImplementedError
    return loss


def get_remove_epoch_no(save_every_n_epochs, save_last_n_epochs, epoch_no):
    if save_last_n_epochs is None:
        return None
    remove_epoch_no = epoch_no - save_every_n_epochs * save_last_n_epochs
    if remove_epoch_no < 0:
        return None
    return remove_epoch_no


def process_caption_tags(
    caption,
    *,
    shuffle_caption,
    keep_tokens,
    keep_tokens_separator,
    caption_tag_dropout_rate,
    caption_dropout_rate,
    rng: random.Random,
    caption_separator=",",
):
    """BaseDataset.process_caption without prefix/suffix, wildcards, token warm-up and replacements."""
    is_drop_out = caption_dropout_rate > 0 and rng.random() < caption_dropout_rate
    if is_drop_out:
        return ""
    if shuffle_caption or caption_tag_dropout_rate > 0:
        fixed_tokens, flex_tokens, fixed_suffix_tokens = [], [], []
        if keep_tokens_separator and keep_tokens_separator in caption:
            fixed_part, flex_part = caption.split(keep_tokens_separator, 1)
            if keep_tokens_separator in flex_part:
                flex_part, fixed_suffix_part = flex_part.split(keep_tokens_separator, 1)
                fixed_suffix_tokens = [t.strip() for t in fixed_suffix_part.split(caption_separator) if t.strip()]
            fixed_tokens = [t.strip() for t in fixed_part.split(caption_separator) if t.strip()]
            flex_tokens = [t.strip() for t in flex_part.split(caption_separator) if t.strip()]
        else:
            tokens = [t.strip() for t in caption.strip().split(caption_separator)]
            flex_tokens = tokens[:]
            if keep_tokens > 0:
                fixed_tokens = flex_tokens[:keep_tokens]
                flex_tokens = tokens[keep_tokens:]

        def dropout_tags(tokens):
            if caption_tag_dropout_rate <= 0:
                return tokens
            return [token for token in tokens if rng.random() >= caption_tag_dropout_rate]

        if shuffle_caption:
            rng.shuffle(flex_tokens)
        flex_tokens = dropout_tags(flex_tokens)
        caption = ", ".join(fixed_tokens + flex_tokens + fixed_suffix_tokens)
    return caption


# --- networks/lora.py --------------------------------------------------------------------------------------------


class LoRAModule(torch.nn.Module):
    """LoRAModule with its forward; `org_forward` is the wrapped layer's forward."""

    def __init__(self, org_module, lora_dim, alpha, dropout=None, rank_dropout=None, module_dropout=None):
        super().__init__()
        if org_module.__class__.__name__ == "Conv2d":
            in_dim, out_dim = org_module.in_channels, org_module.out_channels
            self.lora_down = torch.nn.Conv2d(
                in_dim, lora_dim, org_module.kernel_size, org_module.stride, org_module.padding, bias=False
            )
            self.lora_up = torch.nn.Conv2d(lora_dim, out_dim, (1, 1), (1, 1), bias=False)
        else:
            self.lora_down = torch.nn.Linear(org_module.in_features, lora_dim, bias=False)
            self.lora_up = torch.nn.Linear(lora_dim, org_module.out_features, bias=False)
        self.lora_dim = lora_dim
        self.scale = alpha / lora_dim
        self.multiplier = 1.0
        self.org_forward = org_module.forward
        self.dropout, self.rank_dropout, self.module_dropout = dropout, rank_dropout, module_dropout

    def forward(self, x):
        org_forwarded = self.org_forward(x)
        if self.module_dropout is not None and self.training:
            if torch.rand(1) < self.module_dropout:
                return org_forwarded
        lx = self.lora_down(x)
        if self.dropout is not None and self.training:
            lx = torch.nn.functional.dropout(lx, p=self.dropout)
        if self.rank_dropout is not None and self.training:
            mask = torch.rand((lx.size(0), self.lora_dim), device=lx.device) > self.rank_dropout
            if len(lx.size()) == 3:
                mask = mask.unsqueeze(1)
            elif len(lx.size()) == 4:
                mask = mask.unsqueeze(-1).unsqueeze(-1)
            lx = lx * mask
            scale = self.scale * (1.0 / (1.0 - self.rank_dropout))
        else:
            scale = self.scale
        lx = self.lora_up(lx)
        return org_forwarded + lx * self.multiplier * scale


def apply_max_norm_regularization(state_dict, max_norm_value):
    """LoRANetwork.apply_max_norm_regularization on a kohya state dict (modified in place)."""
    downkeys, upkeys, alphakeys, norms = [], [], [], []
    keys_scaled = 0
    for key in state_dict.keys():
        if "lora_down" in key and "weight" in key:
            downkeys.append(key)
            upkeys.append(key.replace("lora_down", "lora_up"))
            alphakeys.append(key.replace("lora_down.weight", "alpha"))
    for i in range(len(downkeys)):
        down = state_dict[downkeys[i]]
        up = state_dict[upkeys[i]]
        alpha = state_dict[alphakeys[i]]
        dim = down.shape[0]
        scale = alpha / dim
        if up.shape[2:] == (1, 1) and down.shape[2:] == (1, 1):
            updown = (up.squeeze(2).squeeze(2) @ down.squeeze(2).squeeze(2)).unsqueeze(2).unsqueeze(3)
        elif up.shape[2:] == (3, 3) or down.shape[2:] == (3, 3):
            updown = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
        else:
            updown = up @ down
        updown *= scale
        norm = updown.norm().clamp(min=max_norm_value / 2)
        desired = torch.clamp(norm, max=max_norm_value)
        ratio = desired.cpu() / norm.cpu()
        sqrt_ratio = ratio**0.5
        if ratio != 1:
            keys_scaled += 1
            state_dict[upkeys[i]] *= sqrt_ratio
            state_dict[downkeys[i]] *= sqrt_ratio
        scalednorm = updown.norm() * ratio
        norms.append(scalednorm.item())
    return keys_scaled, sum(norms) / len(norms), max(norms)


UNET_TARGET_REPLACE_MODULE = ["Transformer2DModel"]
UNET_TARGET_REPLACE_MODULE_CONV2D_3X3 = ["ResnetBlock2D", "Downsample2D", "Upsample2D"]


def create_unet_modules(unet, network_dim, network_alpha, conv_lora_dim=None, conv_alpha=None):
    """LoRANetwork.__init__'s create_modules for the UNet (no block dims): {lora_name: (dim, alpha)}."""
    target_modules = list(UNET_TARGET_REPLACE_MODULE)
    if conv_lora_dim is not None:
        target_modules += UNET_TARGET_REPLACE_MODULE_CONV2D_3X3
    out = {}
    for name, module in unet.named_modules():
        if module.__class__.__name__ in target_modules:
            for child_name, child_module in module.named_modules():
                is_linear = child_module.__class__.__name__ == "Linear"
                is_conv2d = child_module.__class__.__name__ == "Conv2d"
                is_conv2d_1x1 = is_conv2d and child_module.kernel_size == (1, 1)
                if is_linear or is_conv2d:
                    lora_name = ("lora_unet" + "." + name + "." + child_name).replace(".", "_")
                    dim = alpha = None
                    if is_linear or is_conv2d_1x1:
                        dim, alpha = network_dim, network_alpha
                    elif conv_lora_dim is not None:
                        dim, alpha = conv_lora_dim, conv_alpha
                    if dim is None or dim == 0:
                        continue
                    out[lora_name] = (dim, alpha)
    return out
