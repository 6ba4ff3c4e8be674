"""Bad jobs fail before training: exit code 2, one line on stderr, a `failed` event with that reason."""

from __future__ import annotations

import pytest

from .engine_helpers import engine_config, read_events, run_engine, write_config


def _main(config):
    from lorarun.image.engine.__main__ import main

    return main(["train", "--config", str(config)])


CASES = [
    ("unknown optimizer", {"training": {"optimizer_type": "SGDNesterov"}}, "unknown optimizer 'SGDNesterov'"),
    ("resolution off the bucket step", {"dataset": {"resolution": 80}}, "not a multiple of bucket_reso_steps"),
    ("unknown key", {"training": {"learning_rat": 1e-4}}, "did you mean 'learning_rate'"),
]
ENGINE_CASES = [
    (
        "flux nf4 without CUDA",
        {"model": {"family": "flux", "base": "builtin:tiny-flux"}, "flux": {"quantization": "nf4"}},
        "flux.quantization: nf4 quantises the base with bitsandbytes, which needs a CUDA GPU",
    ),
    ("batch larger than the dataset", {"training": {"batch_size": 5}}, "larger than the dataset (4 images x repeats)"),
    ("AdamW8bit without CUDA", {"training": {"optimizer_type": "AdamW8bit"}}, "AdamW8bit needs a CUDA GPU"),
    ("missing dataset", {"dataset": {"train_data_dir": "/nonexistent/ds"}}, "does not exist"),
]


def _check(tmp_path, capsys, code, expected):
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    events = read_events(tmp_path / "out")
    assert events[-1]["event"] == "failed" and expected in events[-1]["reason"]
    assert "\n" not in events[-1]["reason"]
    assert not any(e["event"] in ("step", "caching") for e in events)


@pytest.mark.parametrize("name, change, expected", CASES, ids=[c[0] for c in CASES])
def test_config_level_errors(tmp_path, dataset, capsys, name, change, expected):
    cfg = engine_config(tmp_path, dataset)
    for section, values in change.items():
        cfg[section].update(values)
    _check(tmp_path, capsys, _main(write_config(tmp_path, cfg)), expected)


@pytest.mark.parametrize("name, change, expected", ENGINE_CASES, ids=[c[0] for c in ENGINE_CASES])
def test_engine_level_errors_fail_before_training(tmp_path, dataset, capsys, name, change, expected):
    pytest.importorskip("torch")
    import torch

    if "without CUDA" in name and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = engine_config(tmp_path, dataset)
    for section, values in change.items():
        cfg.setdefault(section, {}).update(values)
    _check(tmp_path, capsys, _main(write_config(tmp_path, cfg)), expected)


def test_unreadable_config_is_a_config_error(tmp_path, capsys):
    path = tmp_path / "engine_config.json"
    path.write_text("{not json")
    assert _main(path) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_exit_code_and_stderr_as_a_process(tmp_path, dataset):
    cfg = engine_config(tmp_path, dataset, training={"batch_size": 5})
    result = run_engine(write_config(tmp_path, cfg), timeout=60)
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == "lorarun-engine: training.batch_size: 5 is larger than the dataset (4 images x repeats); lower batch_size"
    )
