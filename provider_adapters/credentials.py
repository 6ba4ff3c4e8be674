"""Finding a provider's API key on the laptop, in a fixed order, without ever printing it.

Order (first hit wins):
1. the environment: `VAST_API_KEY`, `RUNPOD_API_KEY`;
2. lorarun's own config, `$LORARUN_HOME/config.toml` (LORARUN_HOME defaults to `~/.lorarun`), e.g.
   `[vastai]` / `[runpod]` with `api_key = "..."`;
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorarun.provider_adapters.errors import CredentialsMissing

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


def lorarun_home(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("LORARUN_HOME"):
        return Path(env["LORARUN_HOME"]).expanduser()
    return (home or Path.home()) / ".lorarun"


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
    cfg = lorarun_home(env, home) / "config.toml"
    raise CredentialsMissing(
        f"No {provider} API key found. Looked in:\n  - "
        + "\n  - ".join(looked)
        + f"\nCreate a key at {CONSOLE_KEY_PAGES[provider]} and either export {ENV_VARS[provider]}=<key> "
        f'or add it to {cfg} as:\n  [{provider}]\n  api_key = "<key>"',
        provider=provider,
    )


def _sources(provider: str, env: Mapping[str, str], home: Path) -> list[tuple[str, Callable[[], str]]]:
    var = ENV_VARS[provider]
    cfg = lorarun_home(env, home) / "config.toml"
    sources: list[tuple[str, Callable[[], str]]] = [
        (f"environment variable {var}", lambda: env.get(var, "").strip()),
        (f"{cfg} [{provider}] api_key", lambda: _toml_key(cfg, (provider, "api_key"))),
    ]
    if provider == "vastai":
        xdg = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
        for path in (xdg / "vastai" / "vast_api_key", home / ".vast_api_key"):
            sources.append((f"{path} (vastai CLI)", functools.partial(_plain_key, path)))
    else:
        path = home / ".runpod" / "config.toml"
        sources.append(
            (
                f"{path} (runpodctl `apikey`, runpod-python [default] api_key)",
                lambda: _toml_key(path, ("apikey",), ("apiKey",), ("default", "api_key")),
            )
        )
    return sources


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
