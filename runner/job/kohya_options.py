"""Every option name kohya sd-scripts' training scripts accept, to tell a real kohya option lorarun does not support
yet from a typo (issue #12.3: a real option never gets a "did you mean").

Generated from the argparse definitions (`parser.add_argument("--name", ...)`) of kohya-ss/sd-scripts at commit
48d368fa557731ad0488c07304dfeba8c07910eb (2026-02-16), files library/train_util.py, train_network.py,
sdxl_train_network.py, flux_train_network.py, library/sdxl_train_util.py, library/custom_train_functions.py,
library/flux_train_utils.py, library/deepspeed_utils.py, library/config_util.py, library/huggingface_util.py:
    git show HEAD:<file> | grep -oE '"--[a-zA-Z0-9_]+"'
Plus the networks.lora `network_args` keys (networks/lora.py `create_network`: kwargs.get(...)), the optimizer and
scheduler names kohya's `get_optimizer` / `get_scheduler_fix` accept.
"""
from __future__ import annotations

KOHYA_OPTIONS = frozenset({
    "adaptive_noise_scale", "ae", "alpha_mask", "apply_t5_attn_mask", "async_upload", "base_weights",
    "base_weights_multiplier", "blocks_to_swap", "bucket_no_upscale", "bucket_reso_steps", "cache_info",
    "cache_latents", "cache_latents_to_disk", "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk",
    "caption_dropout_every_n_epochs", "caption_dropout_rate", "caption_extension", "caption_extention",
    "caption_prefix", "caption_separator", "caption_suffix", "caption_tag_dropout_rate", "clip_l", "clip_skip",
    "color_aug", "conditioning_data_dir", "config_file", "controlnet_model_name_or_path",
    "cpu_offload_checkpointing", "dataset_class", "dataset_config", "dataset_repeats", "ddp_gradient_as_bucket_view",
    "ddp_static_graph", "ddp_timeout", "debiased_estimation_loss", "debug_dataset", "deepspeed", "dim_from_weights",
    "disable_mmap_load_safetensors", "discrete_flow_shift", "dynamo_backend", "enable_bucket", "enable_wildcard",
    "face_crop_aug_range", "flip_aug", "fp16_master_weights_and_gradients", "fp8_base", "fp8_base_unet", "full_bf16",
    "full_fp16", "fused_backward_pass", "gradient_accumulation_steps", "gradient_checkpointing", "guidance_scale",
    "highvram", "huber_c", "huber_scale", "huber_schedule", "huggingface_path_in_repo", "huggingface_repo_id",
    "huggingface_repo_type", "huggingface_repo_visibility", "huggingface_token", "in_json", "initial_epoch",
    "initial_step", "ip_noise_gamma", "ip_noise_gamma_random_strength", "keep_tokens", "keep_tokens_separator",
    "learning_rate", "log_config", "log_prefix", "log_tracker_config", "log_tracker_name", "log_with", "logging_dir",
    "logit_mean", "logit_std", "loss_type", "lowram", "lr_decay_steps", "lr_scheduler", "lr_scheduler_args",
    "lr_scheduler_min_lr_ratio", "lr_scheduler_num_cycles", "lr_scheduler_power", "lr_scheduler_timescale",
    "lr_scheduler_type", "lr_warmup_steps", "masked_loss", "max_bucket_reso", "max_data_loader_n_workers",
    "max_grad_norm", "max_timestep", "max_token_length", "max_train_epochs", "max_train_steps",
    "max_validation_steps", "mem_eff_attn", "min_bucket_reso", "min_snr_gamma", "min_timestep", "mixed_precision",
    "mode_scale", "model_prediction_type", "model_type", "multires_noise_discount", "multires_noise_iterations",
    "network_alpha", "network_args", "network_dim", "network_dropout", "network_module",
    "network_train_text_encoder_only", "network_train_unet_only", "network_weights", "no_half_vae", "no_metadata",
    "noise_offset", "noise_offset_random_strength", "offload_optimizer_device", "offload_optimizer_nvme_path",
    "offload_param_device", "offload_param_nvme_path", "optimizer_args", "optimizer_schedulefree_wrapper",
    "optimizer_type", "output_config", "output_dir", "output_name", "perlin_noise", "persistent_data_loader_workers",
    "pretrained_model_name_or_path", "prior_loss_weight", "random_crop", "reg_data_dir", "resize_interpolation",
    "resolution", "resume", "resume_from_huggingface", "sample_at_first", "sample_every_n_epochs",
    "sample_every_n_steps", "sample_prompts", "sample_sampler", "save_every_n_epochs", "save_every_n_steps",
    "save_last_n_epochs", "save_last_n_epochs_state", "save_last_n_steps", "save_last_n_steps_state",
    "save_model_as", "save_n_epoch_ratio", "save_precision", "save_state", "save_state_on_train_end",
    "save_state_to_huggingface", "scale_v_pred_loss_like_noise_pred", "scale_weight_norms",
    "schedulefree_wrapper_args", "sdpa", "secondary_separator", "seed", "shuffle_caption", "sigmoid_scale",
    "skip_cache_check", "skip_until_initial_step", "split_mode", "support_controlnet", "support_dreambooth",
    "support_dropout", "support_finetuning", "t5xxl", "t5xxl_max_token_length", "text_encoder_batch_size",
    "text_encoder_lr", "timestep_sampling", "token_warmup_min", "token_warmup_step", "tokenizer_cache_dir",
    "torch_compile", "train_batch_size", "train_data_dir", "training_comment", "unet_lr", "use_8bit_adam",
    "use_lion_optimizer", "use_safetensors", "v2", "v_parameterization", "v_pred_like_loss", "vae", "vae_batch_size",
    "validate_every_n_epochs", "validate_every_n_steps", "validation_seed", "validation_split", "wandb_api_key",
    "wandb_run_name", "weighted_captions", "weighting_scheme", "xformers", "zero3_init_flag",
    "zero3_save_16bit_model", "zero_stage", "zero_terminal_snr",
})

# networks/lora.py and networks/lora_flux.py create_network(**kwargs): the keys they read from network_args
KOHYA_NETWORK_ARGS = frozenset({
    "block_alphas", "block_dims", "block_lr_zero_threshold", "conv_alpha", "conv_block_alphas", "conv_block_dims",
    "conv_dim", "down_lr_weight", "loraplus_lr_ratio", "loraplus_text_encoder_lr_ratio", "loraplus_unet_lr_ratio",
    "mid_lr_weight", "module_dropout", "rank_dropout", "up_lr_weight",
    # lora_flux
    "ggpo_beta", "ggpo_sigma", "img_attn_dim", "img_mlp_dim", "img_mod_dim", "in_dims", "network_reg_dims",
    "network_reg_lrs", "single_dim", "single_mod_dim", "split_qkv", "train_blocks", "train_double_block_indices",
    "train_single_block_indices", "train_t5xxl", "txt_attn_dim", "txt_mlp_dim", "txt_mod_dim", "verbose",
})

# train_util.get_optimizer: the names it matches (case-insensitively); a dotted class path is also accepted there
KOHYA_OPTIMIZERS = frozenset({
    "adamw", "adamw8bit", "sgdnesterov8bit", "lion8bit", "pagedadamw8bit", "pagedlion8bit", "pagedadamw",
    "pagedadamw32bit", "sgdnesterov", "lion", "dadaptation", "dadaptadampreprint", "dadaptadagrad", "dadaptadam",
    "dadaptadan", "dadaptadanip", "dadaptlion", "dadaptsgd", "prodigy", "adafactor", "radamschedulefree",
    "adamwschedulefree", "sgdschedulefree",
})

# train_util.get_scheduler_fix: transformers' SchedulerType values, diffusers' piecewise_constant, adafactor:<lr>
KOHYA_SCHEDULERS = frozenset({
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
    "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay",
    "piecewise_constant", "adafactor",
})
