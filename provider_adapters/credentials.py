"""Finding a provider's API key on the laptop, in a fixed order, without ever printing it.

Order (first hit wins):
1. the environment: `VAST_API_KEY`, `RUNPOD_API_KEY`;
2. lorarun's user config, `~/.config/lorarun/config.toml` (user_files.py: `$LORARUN_CONFIG`, `$XDG_CONFIG_HOME`
   honoured), `[vastai]` / `[runpod]` with `api_key = "..."` — the file that holds the defaults too. The old place,
   `~/.lorarun/config.toml`, is migrated into it the first time it is read (config_file.py); an old file that cannot
   be migrated is still named here;
3. the provider's own CLI files:
   - Vast: `~/.config/vastai/vast_api_key` (vast-cli; `$XDG_CONFIG_HOME` honoured) and the legacy
     `~/.vast_api_key` (older CLI; newer ones migrate it) — the whole file is the key;
   - RunPod: `~/.runpod/config.toml` — runpod-python writes profiles (`[default]` `api_key = "..."`);
     runpodctl writes a top-level `apikey = "..."` (viper lower-cases `apiKey`). Both are read.

`home` and `env` are injectable so tests run against temporary folders.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorarun.provider_adapters import config_file
from lorarun.provider_adapters.errors import CredentialsMissing
from lorarun.provider_adapters.user_files import legacy_config_path, user_config_path

ENV_VARS = {"vastai": "VAST_API_KEY", "runpod": "RUNPOD_API_KEY"}
CONSOLE_KEY_PAGES = {
    "vastai": "https://cloud.vast.ai/manage-keys/",
    "runpod": "https://console.runpod.io/user/settings",
}


@dataclass(frozen=True)
class ApiKey:
    provider: str
    key: str = field(repr=False)  # never in a repr, a log line or an exception
    source: str  # where it was found, safe to show

    def __str__(self) -> str:
        return f"{self.provider} API key from {self.source}"


def find_api_key(provider: str, *, env: Mapping[str, str] | None = None, home: Path | None = None) -> ApiKey:
    """The first key found for `provider` ("vastai" or "runpod"); CredentialsMissing naming every place tried."""
    if provider not in ENV_VARS:
        raise ValueError(f"no API key lookup for provider {provider!r}")
    env = os.environ if env is None else env
    home = home or Path.home()
    looked: list[str] = []
    for where, read in _sources(provider, env, home):
        looked.append(where)
        try:
            key = read()
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            # A broken file is reported by name and error class only (its content may be the key).
            looked[-1] = f"{where} (unreadable: {type(err).__name__})"
            continue
        if key:
            return ApiKey(provider, key, where)
    cfg = user_config_path(env, home)
    raise CredentialsMissing(
        f"No {provider} API key found. Looked in:\n  - "
        + "\n  - ".join(looked)
        + f"\nCreate a key at {CONSOLE_KEY_PAGES[provider]}, then run `lorarun config key {provider}` (saved in "
        f"{cfg}, mode 0600), or export {ENV_VARS[provider]}=<key>, "
        f'or add it to that file as:\n  [{provider}]\n  api_key = "<key>"',
        provider=provider,
    )


def _sources(provider: str, env: Mapping[str, str], home: Path) -> Iterator[tuple[str, Callable[[], str]]]:
    """Where to look, in order; lazy, so the old config file is listed only if reading the user config (which
    migrates it) left it in place."""
    var = ENV_VARS[provider]
    yield f"environment variable {var}", lambda: env.get(var, "").strip()
    cfg = user_config_path(env, home)

    def from_user_config() -> str:
        config_file.prepare(env, home)  # the old file migrated, a loose mode fixed: each said once
        return _toml_key(cfg, (provider, "api_key"))

    yield f"{cfg} [{provider}] api_key", from_user_config
    legacy = legacy_config_path(env, home)
    if legacy.is_file():  # still there: it could not be migrated (a line said why)
        yield f"{legacy} [{provider}] api_key", lambda: _toml_key(legacy, (provider, "api_key"))
    if provider == "vastai":
        xdg = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
        for path in (xdg / "vastai" / "vast_api_key", home / ".vast_api_key"):
            yield f"{path} (vastai CLI)", functools.partial(_plain_key, path)
    else:
        path = home / ".runpod" / "config.toml"
        yield (
            f"{path} (runpodctl `apikey`, runpod-python [default] api_key)",
            lambda: _toml_key(path, ("apikey",), ("apiKey",), ("default", "api_key")),
        )


def _plain_key(path: Path) -> str:
    return path.read_text().strip() if path.is_file() else ""


def _toml_key(path: Path, *candidates: tuple[str, ...]) -> str:
    if not path.is_file():
        return ""
    data = tomllib.loads(path.read_text())
    for keys in candidates:
        node: Any = data
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, str) and node.strip():
            return node.strip()
    return ""
