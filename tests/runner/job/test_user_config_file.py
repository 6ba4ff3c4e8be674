"""One user config file for defaults and API keys (issue 22): the old `~/.lorarun/config.toml` migrated into it
with one line (nothing lost, what the new file says wins, the old file kept as `.migrated`), mode 0600 whenever
lorarun writes it, a loose mode fixed once, the environment still winning, and no key ever printed."""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from lorarun.provider_adapters import config_file
from lorarun.provider_adapters.credentials import find_api_key
from lorarun.provider_adapters.user_files import legacy_config_path, lorarun_home, user_config_path
from lorarun.runner.job import user_config

KEY = "sk-test-4f1c9a0b8e7d6c5b"
OTHER = "rp-test-0a1b2c3d4e5f6a7b"


@pytest.fixture
def places(tmp_path):
    """A home folder with nothing set: env names neither LORARUN_HOME nor LORARUN_CONFIG, so the real defaults
    (`~/.lorarun`, `~/.config/lorarun`) apply under `tmp_path`."""
    env: dict[str, str] = {}
    return env, tmp_path, user_config_path(env, tmp_path), legacy_config_path(env, tmp_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def notices() -> tuple[list[str], config_file.Notify]:
    said: list[str] = []
    return said, said.append


@pytest.mark.skipif(sys.platform == "darwin" or os.name == "nt", reason="XDG places: Linux and BSD")
def test_the_places(tmp_path):
    assert user_config_path({}, tmp_path) == tmp_path / ".config" / "lorarun" / "config.toml"
    assert user_config_path({"XDG_CONFIG_HOME": str(tmp_path / "x")}, tmp_path) == tmp_path / "x/lorarun/config.toml"
    assert user_config_path({"LORARUN_CONFIG": "/c/l.toml"}, tmp_path) == Path("/c/l.toml")
    assert legacy_config_path({}, tmp_path) == tmp_path / ".lorarun" / "config.toml"
    assert lorarun_home({"LORARUN_HOME": str(tmp_path / "h")}, tmp_path) == tmp_path / "h"


def test_old_file_only_is_moved_with_one_line_and_kept_as_migrated(places):
    env, home, new, old = places
    old.parent.mkdir(parents=True)
    old.write_text(f'[vastai]\napi_key = "{KEY}"\n[mine]\nnote = "keep"\n')
    said, notify = notices()
    assert config_file.prepare(env, home, notify) == new
    assert tomllib.loads(new.read_text()) == {"vastai": {"api_key": KEY}, "mine": {"note": "keep"}}
    assert mode(new) == 0o600
    assert not old.exists() and (old.parent / "config.toml.migrated").read_text().count(KEY) == 1
    assert len(said) == 1 and str(old) in said[0] and str(new) in said[0] and KEY not in said[0]
    config_file.prepare(env, home, notify)
    assert len(said) == 1  # once
    assert find_api_key("vastai", env=env, home=home).source == f"{new} [vastai] api_key"


def test_both_files_merge_and_the_new_files_values_win(places):
    env, home, new, old = places
    old.parent.mkdir(parents=True)
    old.write_text(f'[vastai]\napi_key = "old-vast-key"\n[runpod]\napi_key = "{OTHER}"\n')
    new.parent.mkdir(parents=True)
    new.write_text(f'provider = "vastai"\nmax_cost = 5.0\n[vastai]\napi_key = "{KEY}"\n')
    said, notify = notices()
    config_file.prepare(env, home, notify)
    data = tomllib.loads(new.read_text())
    assert data == {"provider": "vastai", "max_cost": 5.0, "vastai": {"api_key": KEY}, "runpod": {"api_key": OTHER}}
    assert len(said) == 1 and (old.parent / "config.toml.migrated").is_file()
    assert find_api_key("vastai", env=env, home=home).key == KEY
    assert find_api_key("runpod", env=env, home=home).key == OTHER


def test_neither_file_is_quiet_and_creates_nothing(places):
    env, home, new, old = places
    said, notify = notices()
    assert config_file.prepare(env, home, notify) == new
    assert said == [] and not new.exists() and not old.exists()


def test_an_unreadable_old_file_stays_is_named_and_never_shown(places):
    env, home, new, old = places
    old.parent.mkdir(parents=True)
    old.write_text(f"[runpod\napi_key = {KEY}\n")
    said, notify = notices()
    config_file.prepare(env, home, notify)
    assert old.is_file() and not new.exists()
    assert len(said) == 1 and "TOMLDecodeError" in said[0] and KEY not in said[0]


def test_every_write_is_0600_even_under_a_permissive_umask(places):
    env, home, new, _ = places
    previous = os.umask(0o000)
    try:
        user_config.set_value("max_cost", "5", new)
        assert mode(new) == 0o600
        config_file.store_api_key("runpod", OTHER, env, home, notices()[1])
        assert mode(new) == 0o600
    finally:
        os.umask(previous)


def test_a_file_with_keys_readable_by_others_is_made_0600_saying_so_once(places):
    env, home, new, _ = places
    new.parent.mkdir(parents=True)
    new.write_text(f'[vastai]\napi_key = "{KEY}"\n')
    new.chmod(0o644)
    said, notify = notices()
    config_file.prepare(env, home, notify)
    assert mode(new) == 0o600 and len(said) == 1 and "0644" in said[0] and KEY not in said[0]
    config_file.prepare(env, home, notify)
    assert len(said) == 1


def test_a_loose_file_without_keys_is_left_alone(places):
    env, home, new, _ = places
    new.parent.mkdir(parents=True)
    new.write_text('provider = "local"\n')
    new.chmod(0o644)
    said, notify = notices()
    config_file.prepare(env, home, notify)
    assert mode(new) == 0o644 and said == []


def test_the_environment_beats_the_file(places):
    env, home, new, _ = places
    config_file.store_api_key("vastai", KEY, env, home, notices()[1])
    got = find_api_key("vastai", env={"VAST_API_KEY": "from-env"}, home=home)
    assert got.key == "from-env" and "VAST_API_KEY" in got.source
    assert find_api_key("vastai", env=env, home=home).key == KEY


def test_a_linked_config_stays_a_link_and_its_target_is_written_private(places):
    env, home, new, _ = places
    target = home / "dotfiles" / "lorarun.toml"
    target.parent.mkdir()
    target.write_text('provider = "local"\n')
    new.parent.mkdir(parents=True)
    new.symlink_to(target)
    config_file.store_api_key("vastai", KEY, env, home, notices()[1])
    assert new.is_symlink() and mode(target) == 0o600
    assert tomllib.loads(target.read_text()) == {"provider": "local", "vastai": {"api_key": KEY}}
    assert [p.name for p in target.parent.iterdir()] == ["lorarun.toml"]  # no temporary file left behind
