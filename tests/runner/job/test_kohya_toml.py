"""The TOMLs the popular guides publish must load as they are, and map onto the same fields kohya uses."""

import pytest

from lorarun.runner.errors import SpecError
from lorarun.runner.job.kohya_toml import IGNORED_KEYS, KOHYA_KEYS
from lorarun.runner.job.load import load_job

GUIDE_TOML = """
[model]
pretrained_model_name_or_path = "./v1-5-pruned.safetensors"
v2 = false
v_parameterization = false

[dataset]
train_data_dir = "./img"
resolution = "512,768"
batch_size = 2
enable_bucket = true
min_bucket_reso = 256
max_bucket_reso = 1024
bucket_reso_steps = 64
caption_extension = ".txt"
shuffle_caption = true
keep_tokens = 1

[training]
output_dir = "./out"
output_name = "mychar_v1"
max_train_epochs = 10
learning_rate = 0.0001
unet_lr = 0.0001
text_encoder_lr = 0.00005
lr_scheduler = "cosine_with_restarts"
lr_scheduler_num_cycles = 3
lr_warmup_steps = 0.05
network_module = "networks.lora"
network_dim = 32
network_alpha = 16
optimizer_type = "adamw8bit"
mixed_precision = "fp16"
save_every_n_epochs = 2
save_model_as = "safetensors"
seed = 1234
xformers = true
cache_latents = true
min_snr_gamma = 5
noise_offset = 0.05
clip_skip = 2
"""


def test_guide_toml_maps_every_key(tmp_path):
    (tmp_path / "job.toml").write_text(GUIDE_TOML)
    spec = load_job(tmp_path / "job.toml")
    assert spec.name == "mychar_v1" and spec.output.name == "mychar_v1"
    assert spec.model.family == "sd15" and spec.model.clip_skip == 2
    assert spec.model.base == "./v1-5-pruned.safetensors"
    d, t = spec.dataset, spec.training
    assert d.resolution == (512, 768) and d.shuffle_caption and d.keep_tokens == 1
    assert (t.batch_size, t.max_train_epochs, t.network_dim, t.network_alpha) == (2, 10, 32, 16.0)
    assert t.optimizer_type == "AdamW8bit"  # kohya matches optimizer names case-insensitively
    assert t.lr_scheduler_num_cycles == 3 and t.lr_warmup_steps == 0.05
    assert t.mixed_precision == "fp16" and t.save_every_n_epochs == 2 and t.seed == 1234
    assert t.min_snr_gamma == 5 and t.noise_offset == 0.05 and t.text_encoder_lr == 5e-5
    assert spec.dataset_dir == (tmp_path / "img").resolve() and spec.output_dir == (tmp_path / "out").resolve()
    assert any(n.startswith("xformers") for n in spec.notes)


def test_unknown_kohya_key_names_the_closest(tmp_path):
    (tmp_path / "job.toml").write_text(GUIDE_TOML.replace("network_alpha", "network_alhpa"))
    with pytest.raises(SpecError, match="unknown key 'network_alhpa'; did you mean 'network_alpha'"):
        load_job(tmp_path / "job.toml")


def test_lorarun_section_sets_resources_and_sdxl_flag(tmp_path):
    body = (
        GUIDE_TOML.replace('resolution = "512,768"', 'resolution = "1024,1024"')
        + """
sdxl = true
[lorarun]
provider = "vastai"
gpus = ["RTX 4090", "RTX 3090"]
max_cost = 3.5
"""
    )
    (tmp_path / "job.toml").write_text(body)
    spec = load_job(tmp_path / "job.toml")
    assert spec.model.family == "sdxl"
    assert spec.resources.provider == "vastai" and spec.resources.gpus == ("RTX 4090", "RTX 3090")
    assert spec.resources.max_cost == 3.5


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ('save_model_as = "safetensors"', 'save_model_as = "ckpt"', "only 'safetensors'"),
        (
            "seed = 1234",
            'network_args = ["block_dims=2,2,2"]',
            "block_dims: known kohya network argument, not supported",
        ),
        ("seed = 1234", "color_aug = true", "cached latents"),
        ("network_dim = 32", 'network_dim = "big"', "training.network_dim: expected a whole number"),
    ],
)
def test_unsupported_values_are_refused(tmp_path, old, new, expected):
    assert old in GUIDE_TOML
    (tmp_path / "job.toml").write_text(GUIDE_TOML.replace(old, new))
    with pytest.raises(SpecError, match=expected):
        load_job(tmp_path / "job.toml")


def test_sample_prompts_file_is_read(tmp_path):
    (tmp_path / "prompts.txt").write_text("# comment\nmychar, smiling --n lowres --w 512\nmychar, running\n")
    (tmp_path / "job.toml").write_text(GUIDE_TOML + 'sample_prompts = "prompts.txt"\nsample_every_n_epochs = 2\n')
    spec = load_job(tmp_path / "job.toml")
    assert spec.sample.prompts == ("mychar, smiling", "mychar, running")
    assert spec.sample.every_n_epochs == 2


def test_mapping_tables_do_not_overlap():
    assert not set(KOHYA_KEYS) & set(IGNORED_KEYS)


FLUX_TOML = """
pretrained_model_name_or_path = "./flux1-dev.safetensors"
clip_l = "./clip_l.safetensors"
t5xxl = "./t5xxl_fp16.safetensors"
ae = "./ae.safetensors"
train_data_dir = "./img"
resolution = "1024,1024"
output_dir = "./out"
output_name = "flux_lora"
network_module = "networks.lora_flux"
network_dim = 16
network_alpha = 16
network_train_unet_only = true
learning_rate = 1e-4
max_train_epochs = 10
mixed_precision = "bf16"
gradient_checkpointing = true
cache_latents_to_disk = true
cache_text_encoder_outputs = true
sdpa = true
guidance_scale = 1.0
timestep_sampling = "shift"
discrete_flow_shift = 3.1582
model_prediction_type = "raw"
t5xxl_max_token_length = 512
apply_t5_attn_mask = true

[lorarun]
flux_quantization = "nf4"
"""


def test_kohya_flux_toml_maps_onto_the_flux_section(tmp_path):
    """kohya's recommended Flux.1-dev LoRA settings (sd-scripts README: shift 3.1582, raw, guidance 1.0)."""
    (tmp_path / "job.toml").write_text(FLUX_TOML)
    spec = load_job(tmp_path / "job.toml")
    f = spec.flux
    assert spec.model.family == "flux" and f.flavour == "dev" and f.quantization == "nf4"
    assert (f.clip_l, f.t5xxl, f.ae) == ("./clip_l.safetensors", "./t5xxl_fp16.safetensors", "./ae.safetensors")
    assert (f.timestep_sampling, f.discrete_flow_shift, f.model_prediction_type) == ("shift", 3.1582, "raw")
    assert f.guidance_scale == 1.0 and f.t5xxl_max_token_length == 512 and f.apply_t5_attn_mask is True
    engine = spec.engine_config(job_id="j", dataset_dir="/d", reg_dir=None, output_dir="/o")
    assert engine.flux == f
    (tmp_path / "schnell.toml").write_text(FLUX_TOML.replace("flux1-dev", "flux1-schnell"))
    assert load_job(tmp_path / "schnell.toml").flux.flavour == "schnell"


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ('model_prediction_type = "raw"', 'model_prediction_type = "sigma_scaled"', "model_prediction_type"),
        ('timestep_sampling = "shift"', 'timestep_sampling = "logit"', "flux.timestep_sampling: use one of"),
        ("apply_t5_attn_mask = true", "fp8_base = true", "fp8 base weights are not supported"),
        ("apply_t5_attn_mask = true", "blocks_to_swap = 18", "block swapping"),
        ("t5xxl_max_token_length = 512", "t5xxl_max_token_length = 4096", "flux.t5xxl_max_token_length"),
    ],
)
def test_kohya_flux_options_lorarun_does_not_take_get_a_clear_line(tmp_path, old, new, expected):
    assert old in FLUX_TOML
    (tmp_path / "job.toml").write_text(FLUX_TOML.replace(old, new))
    with pytest.raises(SpecError, match=expected):
        load_job(tmp_path / "job.toml")


def test_lorarun_section_carries_captions_hub_and_notify(tmp_path):
    from lorarun.runner.job.kohya_toml import load_kohya_toml

    data = tmp_path / "img"
    (data / "5_zz").mkdir(parents=True)
    path = tmp_path / "cfg.toml"
    path.write_text(
        f'pretrained_model_name_or_path = "builtin:tiny-sd15"\ntrain_data_dir = "{data}"\nresolution = 512\n'
        '[lorarun]\ncaptions = "auto"\ncaption_model = "blip"\ncaption_trigger = "ohwx"\nhub = "me/zz-lora"\n'
        'hub_private = false\nnotify_webhook = "https://discord.com/api/webhooks/1/x"\n',
        encoding="utf-8",
    )
    spec = load_kohya_toml(path)
    assert (spec.dataset.captions, spec.dataset.caption_model, spec.dataset.caption_trigger) == ("auto", "blip", "ohwx")
    assert spec.output.hub == "me/zz-lora" and spec.output.hub_private is False
    assert spec.notify.webhook == "https://discord.com/api/webhooks/1/x" and spec.notify.discord
