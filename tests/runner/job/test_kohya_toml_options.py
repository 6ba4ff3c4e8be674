"""Each kohya option lorarun implements parses from a kohya TOML onto its field; each real kohya option it does not
implement is refused as "known kohya option, not supported by lorarun yet" (never "did you mean"); a typo still gets
"did you mean". The option names come from kohya's argparse (runner/job/kohya_options.py)."""

import pytest

from lorarun.runner.errors import SpecError
from lorarun.runner.job.kohya_options import KOHYA_OPTIONS
from lorarun.runner.job.kohya_toml import IGNORED_KEYS, KOHYA_KEYS, UNSUPPORTED
from lorarun.runner.job.load import load_job

BASE = """
pretrained_model_name_or_path = "./model.safetensors"
train_data_dir = "./img"
resolution = 512
output_dir = "./out"
output_name = "x"
max_train_epochs = 4
"""


def load(tmp_path, extra: str):
    (tmp_path / "job.toml").write_text(BASE + extra)
    return load_job(tmp_path / "job.toml")


# (TOML line, (section, field), expected value)
CASES = [
    ("save_every_n_steps = 250", ("training", "save_every_n_steps"), 250),
    ("network_dropout = 0.1", ("training", "network_dropout"), 0.1),
    ("scale_weight_norms = 1.0", ("training", "scale_weight_norms"), 1.0),
    ("noise_offset = 0.05\nnoise_offset_random_strength = true", ("training", "noise_offset_random_strength"), True),
    ("noise_offset = 0.05\nadaptive_noise_scale = 0.01", ("training", "adaptive_noise_scale"), 0.01),
    ("multires_noise_iterations = 6", ("training", "multires_noise_iterations"), 6),
    ("multires_noise_discount = 0.4", ("training", "multires_noise_discount"), 0.4),
    ("ip_noise_gamma = 0.1", ("training", "ip_noise_gamma"), 0.1),
    (
        "ip_noise_gamma = 0.1\nip_noise_gamma_random_strength = true",
        ("training", "ip_noise_gamma_random_strength"),
        True,
    ),
    ("zero_terminal_snr = true", ("training", "zero_terminal_snr"), True),
    ('loss_type = "smooth_l1"', ("training", "loss_type"), "smooth_l1"),
    ('loss_type = "huber"\nhuber_schedule = "exponential"', ("training", "huber_schedule"), "exponential"),
    ("huber_c = 0.2", ("training", "huber_c"), 0.2),
    ("huber_scale = 2.0", ("training", "huber_scale"), 2.0),
    ("debiased_estimation_loss = true", ("training", "debiased_estimation_loss"), True),
    ("save_every_n_epochs = 1\nsave_last_n_epochs = 3", ("training", "save_last_n_epochs"), 3),
    (
        'lr_scheduler = "cosine"\nlr_scheduler_args = ["num_cycles=1.5"]',
        ("training", "lr_scheduler_args"),
        ("num_cycles=1.5",),
    ),
    (
        'lr_scheduler = "cosine_with_min_lr"\nlr_scheduler_min_lr_ratio = 0.1',
        ("training", "lr_scheduler_min_lr_ratio"),
        0.1,
    ),
    (
        'lr_scheduler = "cosine_with_min_lr"\nlr_scheduler_min_lr_ratio = 0.1',
        ("training", "lr_scheduler"),
        "cosine_with_min_lr",
    ),
    ('keep_tokens_separator = "|||"', ("dataset", "keep_tokens_separator"), "|||"),
    ("caption_tag_dropout_rate = 0.1", ("dataset", "caption_tag_dropout_rate"), 0.1),
    ('network_args = ["conv_dim=8", "conv_alpha=4"]', ("training", "conv_dim"), 8),
    ('network_args = ["conv_dim=8", "conv_alpha=4"]', ("training", "conv_alpha"), 4.0),
    ('network_args = ["rank_dropout=0.1", "module_dropout=0.05"]', ("training", "rank_dropout"), 0.1),
    ('network_args = ["rank_dropout=0.1", "module_dropout=0.05"]', ("training", "module_dropout"), 0.05),
    ("min_timestep = 100\nmax_timestep = 900", ("training", "min_timestep"), 100),
    ("min_timestep = 100\nmax_timestep = 900", ("training", "max_timestep"), 900),
    (
        "v_parameterization = true\nv2 = true\nscale_v_pred_loss_like_noise_pred = true",
        ("training", "scale_v_pred_loss_like_noise_pred"),
        True,
    ),
    ("v_pred_like_loss = 0.2", ("training", "v_pred_like_loss"), 0.2),
    ('optimizer_type = "DAdaptAdam"', ("training", "optimizer_type"), "DAdaptAdam"),
    ('optimizer_type = "dadaptadam"', ("training", "optimizer_type"), "DAdaptAdam"),
    ('optimizer_type = "PagedAdamW8bit"', ("training", "optimizer_type"), "PagedAdamW8bit"),
    ('optimizer_type = "Lion"', ("training", "optimizer_type"), "Lion"),
    ('optimizer_type = "prodigy"', ("training", "optimizer_type"), "Prodigy"),
]


@pytest.mark.parametrize("line, where, expected", CASES, ids=[c[0].split("\n")[-1] for c in CASES])
def test_kohya_option_maps_onto_its_field(tmp_path, line, where, expected):
    spec = load(tmp_path, line + "\n")
    assert getattr(getattr(spec, where[0]), where[1]) == expected


def test_every_implemented_option_is_a_real_kohya_option():
    """A key in the mapping kohya does not know would be a lorarun invention sold as kohya's."""
    extra = {"batch_size"}  # kohya's dataset-config name for train_batch_size
    assert set(KOHYA_KEYS) - KOHYA_OPTIONS <= extra
    # seed_everything: written by some GUIs' TOML exports, not in sd-scripts' argparse; accepted and ignored
    assert set(IGNORED_KEYS) - {"seed_everything"} <= KOHYA_OPTIONS and set(UNSUPPORTED) - {"datasets"} <= KOHYA_OPTIONS


@pytest.mark.parametrize(
    "line, key",
    [
        ("caption_dropout_every_n_epochs = 2", "caption_dropout_every_n_epochs"),
        ("save_last_n_steps = 100", "save_last_n_steps"),
        ("masked_loss = true", "masked_loss"),
        ("token_warmup_step = 10", "token_warmup_step"),
        ('lr_scheduler_type = "CosineAnnealingLR"', "lr_scheduler_type"),
    ],
)
def test_known_unsupported_kohya_option_says_so(tmp_path, line, key):
    with pytest.raises(SpecError) as info:
        load(tmp_path, line + "\n")
    message = str(info.value)
    assert f"{key}: known kohya option, not supported by lorarun yet" in message and "did you mean" not in message


def test_every_kohya_option_is_mapped_ignored_or_known_unsupported(tmp_path):
    """Sweep kohya's whole argparse list: nothing it accepts ever gets "did you mean"."""
    for key in sorted(KOHYA_OPTIONS):
        (tmp_path / "job.toml").write_text(BASE + f"{key} = 1\n" if key not in BASE else BASE)
        try:
            load_job(tmp_path / "job.toml")
        except SpecError as exc:
            assert "did you mean" not in str(exc) and "unknown key" not in str(exc), (key, str(exc))


def test_flux_job_refuses_the_options_only_the_sd_trainer_implements(tmp_path):
    (tmp_path / "job.toml").write_text(
        BASE.replace("./model.safetensors", "./flux1-dev.safetensors")
        + 'network_dropout = 0.1\nloss_type = "huber"\nnetwork_args = ["train_blocks=single"]\n'
    )
    with pytest.raises(SpecError, match="train_blocks: known kohya network argument, not supported"):
        load_job(tmp_path / "job.toml")
    (tmp_path / "job.toml").write_text(
        BASE.replace("./model.safetensors", "./flux1-dev.safetensors") + 'network_dropout = 0.1\nloss_type = "huber"\n'
    )
    with pytest.raises(SpecError) as info:
        load_job(tmp_path / "job.toml")
    problems = getattr(info.value, "problems", [str(info.value)])
    text = "\n".join(problems)
    assert "training.network_dropout: lorarun implements it for sd15/sdxl; the Flux trainer does not" in text
    assert "training.loss_type: lorarun implements it for sd15/sdxl" in text
    spec = load(tmp_path, 'lr_scheduler = "cosine_with_min_lr"\nlr_scheduler_min_lr_ratio = 0.1\n')
    assert spec.training.lr_scheduler == "cosine_with_min_lr"  # shared parts work for either family


def test_typo_still_gets_did_you_mean(tmp_path):
    with pytest.raises(SpecError, match="unknown key 'network_dropuot'; did you mean 'network_dropout'"):
        load(tmp_path, "network_dropuot = 0.1\n")


@pytest.mark.parametrize(
    "line, expected",
    [
        (
            'network_args = ["block_dims=2,4,4"]',
            "network_args: block_dims: known kohya network argument, not supported",
        ),
        ('network_args = ["conv_dimm=4"]', "'conv_dimm' is not an argument of kohya's networks.lora"),
        ('network_args = ["conv_dim"]', "not of the form key=value"),
        ('network_args = ["conv_alpha=4"]', "conv_alpha: set conv_dim too"),
        (
            'network_args = ["conv_dim=0"]',
            "training.conv_dim: 0 is outside the range a real job has; use a value from 1",
        ),
        ('network_args = ["rank_dropout=1.0"]', "training.rank_dropout: a dropout probability below 1"),
        ('optimizer_type = "SGDNesterov"', "SGDNesterov is a known kohya optimizer, not supported by lorarun yet"),
        ('optimizer_type = "bitsandbytes.optim.AdEMAMix8bit"', "known kohya optimizer, not supported"),
        ('lr_scheduler = "inverse_sqrt"', "inverse_sqrt is a known kohya scheduler, not supported by lorarun yet"),
        ('lr_scheduler = "cosine_with_min_lr"', "cosine_with_min_lr needs exactly one"),
        ('lr_scheduler_args = ["gamma=0.5"]', "'gamma' is not an argument of cosine_with_restarts"),
        ('loss_type = "l3"', "training.loss_type: use one of l2, l1, huber, smooth_l1"),
        ("huber_c = 0", "training.huber_c: 0 is outside the range a real job has; use a value greater than 0 to 1"),
        ("network_dropout = nan", "training.network_dropout: nan is not a finite number"),
        ("caption_tag_dropout_rate = 1.5", "dataset.caption_tag_dropout_rate: 1.5 is outside the range"),
        ("caption_tag_dropout_rate = 1.0", "dataset.caption_tag_dropout_rate: must be below 1"),
        ("save_last_n_epochs = 0", "training.save_last_n_epochs: 0 is outside the range"),
        ("adaptive_noise_scale = 0.1", "adaptive_noise_scale: needs noise_offset"),
        ('keep_tokens_separator = ","', "keep_tokens_separator: ',' would split every tag"),
        ("min_timestep = 500\nmax_timestep = 500", "training.min_timestep: must be below max_timestep"),
        (
            "scale_v_pred_loss_like_noise_pred = true",
            "scale_v_pred_loss_like_noise_pred: needs model.v_parameterization",
        ),
        ("v_parameterization = true\nv2 = true\nv_pred_like_loss = 0.1", "v_pred_like_loss: cannot be used with"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path, line, expected):
    with pytest.raises(SpecError) as info:
        load(tmp_path, line + "\n")
    assert expected in str(info.value) and "\n" not in str(info.value)
