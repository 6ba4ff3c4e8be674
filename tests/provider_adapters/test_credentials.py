"""API key lookup (env → lorarun config → provider CLI files), the missing-key message, and key hygiene."""

from __future__ import annotations

import logging

import pytest

from lorarun.provider_adapters import http
from lorarun.provider_adapters.credentials import ApiKey, find_api_key
from lorarun.provider_adapters.errors import CredentialsMissing
from lorarun.provider_adapters.registry import _FACTORIES, available, make_provider
from lorarun.provider_adapters.user_files import lorarun_home

KEY = "sk-test-4f1c9a0b8e7d6c5b"


def test_env_var_wins(tmp_path):
    (tmp_path / ".vast_api_key").write_text("from-file\n")
    got = find_api_key("vastai", env={"VAST_API_KEY": KEY}, home=tmp_path)
    assert got.key == KEY and "VAST_API_KEY" in got.source


def test_lorarun_config_beats_cli_files(tmp_path):
    cfg = tmp_path / ".config" / "lorarun" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'[runpod]\napi_key = "{KEY}"\n')
    (tmp_path / ".runpod").mkdir()
    (tmp_path / ".runpod" / "config.toml").write_text('apikey = "other"\n')
    got = find_api_key("runpod", env={}, home=tmp_path)
    assert got.key == KEY and got.source == f"{cfg} [runpod] api_key"


def test_a_key_in_the_old_lorarun_home_config_is_migrated_and_found(tmp_path):
    home = tmp_path / "custom"
    home.mkdir()
    (home / "config.toml").write_text(f'[vastai]\napi_key = "{KEY}"\n')
    assert lorarun_home({"LORARUN_HOME": str(home)}, tmp_path) == home
    got = find_api_key("vastai", env={"LORARUN_HOME": str(home)}, home=tmp_path)
    assert got.key == KEY and str(tmp_path / ".config" / "lorarun" / "config.toml") in got.source
    assert (home / "config.toml.migrated").is_file() and not (home / "config.toml").exists()


@pytest.mark.parametrize("rel", [".vast_api_key", ".config/vastai/vast_api_key"])
def test_vast_cli_key_files(tmp_path, rel):
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{KEY}\n")
    got = find_api_key("vastai", env={}, home=tmp_path)
    assert got.key == KEY and str(path) in got.source


@pytest.mark.parametrize(
    "content", [f'apikey = "{KEY}"\napiurl = "https://api.runpod.io/graphql"\n', f'[default]\napi_key = "{KEY}"\n']
)
def test_runpod_cli_config_both_formats(tmp_path, content):
    (tmp_path / ".runpod").mkdir()
    (tmp_path / ".runpod" / "config.toml").write_text(content)
    assert find_api_key("runpod", env={}, home=tmp_path).key == KEY


def test_missing_names_every_place_and_what_to_do(tmp_path):
    with pytest.raises(CredentialsMissing) as e:
        find_api_key("vastai", env={}, home=tmp_path)
    msg = str(e.value)
    for place in (
        "VAST_API_KEY",
        str(tmp_path / ".config" / "lorarun" / "config.toml"),
        str(tmp_path / ".vast_api_key"),
        str(tmp_path / ".config" / "vastai" / "vast_api_key"),
    ):
        assert place in msg
    assert "export VAST_API_KEY=" in msg and "[vastai]" in msg and e.value.provider == "vastai"
    with pytest.raises(CredentialsMissing) as e:
        find_api_key("runpod", env={}, home=tmp_path)
    assert "RUNPOD_API_KEY" in str(e.value) and str(tmp_path / ".runpod" / "config.toml") in str(e.value)


def test_empty_values_do_not_count(tmp_path):
    (tmp_path / ".vast_api_key").write_text("  \n")
    with pytest.raises(CredentialsMissing):
        find_api_key("vastai", env={"VAST_API_KEY": ""}, home=tmp_path)


def test_broken_toml_never_echoes_its_content(tmp_path):
    (tmp_path / ".lorarun").mkdir()
    (tmp_path / ".lorarun" / "config.toml").write_text(f"[runpod\napi_key = {KEY}\n")
    with pytest.raises(CredentialsMissing) as e:
        find_api_key("runpod", env={}, home=tmp_path)
    assert "unreadable" in str(e.value) and KEY not in str(e.value)


def test_key_is_not_in_repr_or_str():
    k = ApiKey("vastai", KEY, "environment variable VAST_API_KEY")
    assert KEY not in repr(k) and KEY not in str(k)


def test_redact_hides_keys_bearer_and_query():
    text = f"GET https://x/api?api_key={KEY}&a=1 Authorization: Bearer {KEY} raw {KEY}"
    out = http.redact(text, [KEY])
    assert KEY not in out and out.count("***") == 3
    assert http.redact("GET /v?api_key=abcdef&b=2") == "GET /v?api_key=***&b=2"
    assert http.redact("nothing secret", [None, ""]) == "nothing secret"


def test_connection_error_message_and_logs_are_redacted(caplog):
    caplog.set_level(logging.DEBUG)
    from lorarun.provider_adapters.errors import TransientError

    with pytest.raises(TransientError) as e:  # port 9 on loopback: nothing listens
        http.request(
            "GET",
            f"http://127.0.0.1:9/x?api_key={KEY}",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=2,
            secrets=[KEY],
        )
    assert KEY not in str(e.value) and KEY not in caplog.text and e.value.__cause__ is None


# -- registry ------------------------------------------------------------------------------------------------
def test_registry_builds_with_found_key(tmp_path):
    p = make_provider("vastai", env={"VAST_API_KEY": KEY}, home=tmp_path, base_url="http://127.0.0.1:9")
    assert p.name == "vastai" and KEY not in repr(p)
    r = make_provider("runpod", api_key=KEY, rest_url="http://127.0.0.1:9", graphql_url="http://127.0.0.1:9/g")
    assert r.name == "runpod"


def test_registry_missing_key_and_unknown_name(tmp_path):
    with pytest.raises(CredentialsMissing):
        make_provider("runpod", env={}, home=tmp_path)
    with pytest.raises(ValueError, match="unknown provider"):
        make_provider("lambda")
    assert {"vastai", "runpod", "ssh", "local"} <= set(available())
    assert _FACTORIES["ssh"] == "lorarun.provider_adapters.ssh:SSHProvider"


def test_redirects_are_not_followed_so_the_key_stays_put():

    from fakes import FakeAPI, Reply

    class Redirector(FakeAPI):
        def route(self, req):
            if req.path == "/start":
                return Reply(302, "", headers={"Location": "/elsewhere"}, content_type="text/plain")
            return Reply(200, {"reached": req.headers.get("authorization")})

    with Redirector() as fake:
        resp = http.request("GET", f"{fake.url}/start", headers={"Authorization": f"Bearer {KEY}"})
        assert resp.status == 302 and [r.path for r in fake.requests] == ["/start"]
