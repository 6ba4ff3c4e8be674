"""`lorarun config` with API keys in the same file (issue 22): `set`/`unset` keep the keys and the 0600 mode and
migrate the old `~/.lorarun/config.toml` first; `show` masks every key and says where it comes from; `key` stores a
key typed hidden (a real terminal) or piped, and refuses bad input in one line."""

from __future__ import annotations

import io
import os
import stat
import tomllib
from pathlib import Path

import pytest
from support.pty_run import PtyProcess

from lorarun.provider_adapters import config_file
from lorarun.provider_adapters.credentials import find_api_key
from lorarun.runner.cli.app import main

KEY = "sk-test-4f1c9a0b8e7d6c5b"
OTHER = "rp-test-0a1b2c3d4e5f6a7b"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def quiet(line: str) -> None:
    pass


def test_config_set_and_unset_keep_the_keys(capsys, monkeypatch):
    path = Path(os.environ["LORARUN_CONFIG"])
    config_file.store_api_key("vastai", KEY, notify=quiet)
    assert main(["config", "set", "provider", "vastai"]) == 0
    assert main(["config", "set", "gpus", "RTX 4090"]) == 0
    assert main(["config", "unset", "gpus"]) == 0
    assert tomllib.loads(path.read_text()) == {"provider": "vastai", "vastai": {"api_key": KEY}}
    assert mode(path) == 0o600
    assert KEY not in capsys.readouterr().out


def test_config_set_migrates_the_old_file_first_so_no_key_is_left_behind(capsys):
    old = Path(os.environ["LORARUN_HOME"]) / "config.toml"
    old.write_text(f'[runpod]\napi_key = "{OTHER}"\n')
    assert main(["config", "set", "max_cost", "3"]) == 0
    data = tomllib.loads(Path(os.environ["LORARUN_CONFIG"]).read_text())
    assert data == {"runpod": {"api_key": OTHER}, "max_cost": 3.0}
    err = capsys.readouterr().err
    assert "moved the settings of" in err and OTHER not in err


def test_config_show_masks_keys_and_says_where_each_comes_from(capsys, monkeypatch):
    config_file.store_api_key("vastai", KEY, notify=quiet)
    monkeypatch.setenv("RUNPOD_API_KEY", OTHER)
    assert main(["config", "set", "provider", "runpod"]) == 0
    capsys.readouterr()
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert KEY not in out and OTHER not in out and KEY[-4:] not in out and OTHER[-4:] not in out
    assert "provider" in out and "runpod" in out and "(mode 0600)" in out
    vast = next(line for line in out.splitlines() if line.startswith("vastai api_key"))
    runpod = next(line for line in out.splitlines() if line.startswith("runpod api_key"))
    assert "********" in vast and os.environ["LORARUN_CONFIG"] in vast
    assert "********" in runpod and "environment variable RUNPOD_API_KEY" in runpod


def test_config_show_without_keys_says_how_to_add_one(capsys):
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "lorarun config key vastai" in out and "lorarun config key runpod" in out


def test_config_key_from_stdin_is_stored_private_and_not_echoed(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    assert main(["config", "key", "runpod"]) == 0
    out = capsys.readouterr().out
    path = Path(os.environ["LORARUN_CONFIG"])
    assert KEY not in out and str(path) in out and mode(path) == 0o600
    assert find_api_key("runpod").key == KEY


@pytest.mark.parametrize(
    "provider, given, expected", [("aws", KEY, "unknown provider 'aws'"), ("vastai", "", "one line")]
)
def test_config_key_bad_input_is_one_line_exit_2(capsys, monkeypatch, provider, given, expected):
    monkeypatch.setattr("sys.stdin", io.StringIO(given + "\n"))
    assert main(["config", "key", provider]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and KEY not in err
    assert not Path(os.environ["LORARUN_CONFIG"]).exists()


def test_config_key_at_a_terminal_is_typed_hidden(tmp_path):
    proc = PtyProcess(["config", "key", "vastai"], cwd=str(tmp_path))
    # click writes "vastai API key:" itself, then getpass turns echo off (discarding what was typed) and writes " ":
    # typing before the space shows would race the terminal
    proc.expect(r"vastai API key: ")
    proc.send(KEY)
    assert proc.wait() == 0
    assert KEY not in proc.text and "saved in" in proc.text
    assert find_api_key("vastai").key == KEY and mode(Path(os.environ["LORARUN_CONFIG"])) == 0o600
