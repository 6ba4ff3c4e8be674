"""The user's config (`lorarun config …`), jobs inheriting it, and where a job goes when nothing says: asked under a
terminal, one line without one; and every submit showing its plan and asking unless --yes, local included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers_dataset import make_dataset, write_job
from support.pty_run import PtyProcess

from lorarun.runner.cli.app import main
from lorarun.runner.job import user_config
from lorarun.runner.job.validate import validate_job


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_set_get_list_unset_round_trip(capsys):
    path = Path(os.environ["LORARUN_CONFIG"])
    assert run_cli(capsys, "config", "set", "provider", "vastai")[0] == 0
    assert run_cli(capsys, "config", "set", "gpus", "RTX 4090, RTX 3090")[0] == 0
    assert run_cli(capsys, "config", "set", "max_price", "0.6")[0] == 0  # alias of max_price_per_hour
    code, out, _ = run_cli(capsys, "config", "get", "gpus")
    assert code == 0 and out.strip() == "RTX 4090, RTX 3090"
    code, out, _ = run_cli(capsys, "config", "list")
    assert str(path) in out and "max_price_per_hour" in out and "0.6" in out and "(not set)" in out
    assert user_config.load() == {"provider": "vastai", "gpus": ["RTX 4090", "RTX 3090"], "max_price_per_hour": 0.6}
    assert run_cli(capsys, "config", "unset", "provider")[0] == 0
    assert run_cli(capsys, "config", "get", "provider")[0] == 1


@pytest.mark.parametrize(
    "args, expected",
    [
        (("set", "provder", "vastai"), "unknown key 'provder'; did you mean 'provider'?"),
        (("set", "provider", "aws"), "unknown provider 'aws'"),
        (("set", "max_cost", "nan"), "positive number of dollars"),
        (("set", "max_cost", "0"), "positive number of dollars"),
    ],
)
def test_bad_settings_are_one_line_exit_2(capsys, args, expected):
    code, _, err = run_cli(capsys, "config", *args)
    assert code == 2 and expected in err and "Traceback" not in err


def test_the_users_own_tables_survive_a_set(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[mine]\nnote = "keep me"\n', encoding="utf-8")
    user_config.set_value("max_cost", "5", path)
    import tomllib

    assert tomllib.loads(path.read_text()) == {"max_cost": 5.0, "mine": {"note": "keep me"}}


def test_platform_location():
    env = {"XDG_CONFIG_HOME": "/xdg"}
    if os.name == "posix" and os.uname().sysname == "Linux":
        assert user_config.config_path(env) == Path("/xdg/lorarun/config.toml")
        assert user_config.config_path({}) == Path.home() / ".config" / "lorarun" / "config.toml"
    assert user_config.config_path({"LORARUN_CONFIG": "/x/c.toml"}) == Path("/x/c.toml")


def test_jobs_inherit_what_they_do_not_set_and_keep_what_they_do(tmp_path):
    user_config.set_value("provider", "vastai")
    user_config.set_value("max_cost", "5")
    user_config.set_value("gpus", "RTX 4090")
    make_dataset(tmp_path / "data", {"10_x": 2})
    plain = write_job(tmp_path / "plain.yaml", "data")
    spec = validate_job(plain).spec
    assert (spec.resources.provider, spec.resources.max_cost, spec.resources.gpus) == ("vastai", 5.0, ("RTX 4090",))
    own = write_job(tmp_path / "own.yaml", "data")
    own.write_text(own.read_text() + "resources:\n  provider: local\n  max_cost: 2\n")
    spec = validate_job(own).spec
    assert (spec.resources.provider, spec.resources.max_cost, spec.resources.gpus) == ("local", 2.0, ("RTX 4090",))
    assert validate_job(own, provider="runpod").spec.resources.provider == "runpod"  # the flag beats both
    toml = tmp_path / "kohya.toml"
    toml.write_text(
        'train_data_dir = "data"\npretrained_model_name_or_path = "builtin:tiny-sd15"\nresolution = 64\n'
        'min_bucket_reso = 32\nmax_bucket_reso = 128\nbucket_reso_steps = 16\nmixed_precision = "no"\n'
        'optimizer_type = "AdamW"\n[lorarun]\nmax_cost = 1.5\n'
    )
    spec = validate_job(toml).spec
    assert (spec.resources.provider, spec.resources.max_cost) == ("vastai", 1.5)


def test_no_provider_anywhere_without_a_terminal_is_one_line(tmp_path, capsys):
    make_dataset(tmp_path / "data", {"10_x": 2})
    job = write_job(tmp_path / "job.yaml", "data")
    code, out, err = run_cli(capsys, "submit", str(job), "--yes")
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "no provider chosen" in lines[0] and "lorarun config set provider" in lines[0]


def test_estimate_without_any_provider_prices_from_the_last_known_table_and_says_so(tmp_path, capsys):
    """Issue 23.7: a price before any account exists, labelled as what it is, and how to get live offers."""
    make_dataset(tmp_path / "data", {"10_x": 2})
    job = write_job(tmp_path / "job.yaml", "data")
    code, out, err = run_cli(capsys, "estimate", str(job))
    assert code == 0, err
    assert "no provider chosen" in out and "last-known public prices as of" in out and "not live offers" in out
    assert "cheapest that fits: vastai" in out or "cheapest that fits: runpod" in out
    assert "lorarun config set provider" in out


def test_a_local_submit_without_yes_and_without_a_terminal_does_not_start(tmp_path, capsys):
    make_dataset(tmp_path / "data", {"10_x": 2})
    job = write_job(tmp_path / "job.yaml", "data")
    code, _, err = run_cli(capsys, "submit", str(job), "--provider", "local")
    assert code == 2 and "pass --yes" in err
    assert not any((Path(os.environ["LORARUN_HOME"]) / "jobs").glob("*"))


def test_under_a_terminal_submit_asks_where_and_then_asks_to_start(tmp_path):
    """A kohya-less YAML with no provider and no config: the user is asked where, shown the plan for this machine,
    and asked again; answering no starts nothing."""
    make_dataset(tmp_path / "data", {"10_x": 2})
    job = write_job(tmp_path / "job.yaml", "data")
    proc = PtyProcess(["submit", str(job)], cwd=str(tmp_path))
    proc.expect(r"Provider \[local/ssh/vastai/runpod\]")
    proc.send("local")
    proc.expect(r"lorarun config set provider local")
    proc.expect(r"plan: .* on local")
    proc.expect(r"Start it on .*\(local, no charge\)\? \[y/n\]")
    proc.send("n")
    assert proc.wait() == 2
    assert "not confirmed; nothing was started" in proc.text
    assert not any((Path(os.environ["LORARUN_HOME"]) / "jobs").glob("*"))


def test_a_kohya_toml_without_lorarun_section_is_not_silently_local(tmp_path, capsys):
    """The guide's TOML has no [lorarun]: it used to mean `provider: local` and start at once."""
    make_dataset(tmp_path / "data", {"10_x": 2})
    toml = tmp_path / "kohya.toml"
    toml.write_text(
        'train_data_dir = "data"\npretrained_model_name_or_path = "builtin:tiny-sd15"\nresolution = 64\n'
        'min_bucket_reso = 32\nmax_bucket_reso = 128\nbucket_reso_steps = 16\nmixed_precision = "no"\n'
        'optimizer_type = "AdamW"\n'
    )
    code, out, _ = run_cli(capsys, "validate", str(toml))
    assert code == 0 and "provider not chosen" in out
    code, _, err = run_cli(capsys, "submit", str(toml), "--yes")
    assert code == 2 and "no provider chosen" in err
    user_config.set_value("provider", "local")
    assert validate_job(toml).spec.resources.provider == "local"
