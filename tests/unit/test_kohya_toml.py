"""The TOMLs the popular guides publish must load as they are, and map onto the same fields kohya uses."""
import pytest

from lorarun.runner.errors import SpecError
from lorarun.runner.kohya_toml import IGNORED_KEYS, KOHYA_KEYS
from lorarun.runner.spec import load_job

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
    body = GUIDE_TOML.replace('resolution = "512,768"', 'resolution = "1024,1024"') + """
sdxl = true
[lorarun]
provider = "vastai"
gpus = ["RTX 4090", "RTX 3090"]
max_cost = 3.5
"""
    (tmp_path / "job.toml").write_text(body)
    spec = load_job(tmp_path / "job.toml")
    assert spec.model.family == "sdxl"
    assert spec.resources.provider == "vastai" and spec.resources.gpus == ("RTX 4090", "RTX 3090")
    assert spec.resources.max_cost == 3.5


@pytest.mark.parametrize("old, new, expected", [
    ('save_model_as = "safetensors"', 'save_model_as = "ckpt"', "only 'safetensors'"),
    ("seed = 1234", 'network_args = ["conv_dim=4"]', "network_args"),
    ("seed = 1234", "color_aug = true", "cached latents"),
    ("network_dim = 32", 'network_dim = "big"', "training.network_dim: expected a whole number"),
])
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
