"""Where lorarun keeps its files on the laptop: the home folder and the one user config file.

- the **home** (`$LORARUN_HOME`, else `~/.lorarun`): what lorarun writes for itself — jobs, calibration, pinned
  host keys, caption jobs. Nothing the user edits.
- the **user config** (`$LORARUN_CONFIG`, else the platform's configuration folder): what the user says — the
  defaults every job inherits (`lorarun config set …`, runner/job/user_config.py) and the providers' API keys
  (`[vastai]` / `[runpod]` `api_key = "…"`, read by credentials.py). One file for both; config_file.py reads,
  writes (mode 0600) and migrates it.

This module sits with the adapters because both the controller (runner/) and the credentials lookup here need
it, and the adapters may not import the controller. `env` and `home` are injectable so tests use temporary folders.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

CONFIG_NAME = "config.toml"


def lorarun_home(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """`$LORARUN_HOME`, else `~/.lorarun`. Tests point it at a temporary folder."""
    env = os.environ if env is None else env
    if env.get("LORARUN_HOME"):
        return Path(env["LORARUN_HOME"]).expanduser()
    return (home or Path.home()) / ".lorarun"


def user_config_path(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """`$LORARUN_CONFIG` when set (tests, several setups); otherwise `$XDG_CONFIG_HOME/lorarun/config.toml`
    (default `~/.config/lorarun/config.toml`) on Linux and BSD, `~/Library/Application Support/lorarun/config.toml`
    on macOS, `%APPDATA%\\lorarun\\config.toml` on Windows."""
    env = os.environ if env is None else env
    home = home or Path.home()
    if env.get("LORARUN_CONFIG"):
        return Path(env["LORARUN_CONFIG"]).expanduser()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "lorarun" / CONFIG_NAME
    if os.name == "nt" and env.get("APPDATA"):
        return Path(env["APPDATA"]) / "lorarun" / CONFIG_NAME
    base = Path(env["XDG_CONFIG_HOME"]).expanduser() if env.get("XDG_CONFIG_HOME") else home / ".config"
    return base / "lorarun" / CONFIG_NAME


def legacy_config_path(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Where earlier lorarun versions kept the API keys: `<home>/config.toml`. Read once, migrated (config_file.py)."""
    return lorarun_home(env, home) / CONFIG_NAME
