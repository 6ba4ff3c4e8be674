"""`lorarun config show` and `lorarun config key`: the user config as the user sees it, API keys never shown.

A key is shown as where it comes from (the environment wins over the file, as for every command) and a mask of
fixed width, so not even its length or its last characters reach a terminal, a screen share or a pasted log.
"""

from __future__ import annotations

import os
import stat

from lorarun.provider_adapters import config_file
from lorarun.provider_adapters.credentials import ENV_VARS, find_api_key
from lorarun.provider_adapters.errors import CredentialsMissing
from lorarun.runner.errors import UserInputError
from lorarun.runner.job import user_config

MASK = "********"


def config_report() -> list[str]:
    """The lines `lorarun config show` prints (rich markup, no secret)."""
    settings = user_config.load()  # migrates the old file first, says so once
    path = user_config.config_path()
    lines = [f"[dim]{path}{_mode(path)}[/]"]
    for name in user_config.KEYS:
        if name in settings:
            value = settings[name]
            lines.append(f"{name:<20} {', '.join(value) if isinstance(value, list) else value}")
    if len(lines) == 1:
        lines.append("[dim](no defaults set: `lorarun config set KEY VALUE`)[/]")
    for provider in ENV_VARS:
        try:
            found = find_api_key(provider)
        except CredentialsMissing:
            lines.append(f"{provider + ' api_key':<20} [dim](not set: `lorarun config key {provider}`)[/]")
            continue
        lines.append(f"{provider + ' api_key':<20} {MASK}  [dim]from {found.source}[/]")
    return lines


def save_api_key(provider: str, secret: str) -> str:
    """Store the key; returns the line to print. Bad input is one line, exit 2."""
    if provider not in ENV_VARS:
        raise UserInputError(f"config key: unknown provider {provider!r}; use one of {', '.join(ENV_VARS)}")
    secret = secret.strip()
    if not secret or any(c.isspace() for c in secret):
        raise UserInputError(f"config key: give the {provider} API key on one line (nothing saved)")
    path = config_file.store_api_key(provider, secret)
    line = f"{provider} API key saved in {path} (mode 0600)"
    if os.environ.get(ENV_VARS[provider], "").strip():
        line += f"; {ENV_VARS[provider]} is set and still wins over the file"
    return line


def _mode(path) -> str:
    try:
        return f" (mode {stat.S_IMODE(path.stat().st_mode):04o})"
    except OSError:
        return " (not created yet)"
