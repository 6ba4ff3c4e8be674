"""The user config file (user_files.py says where): read, written, kept private, and migrated from the old place.

- **Private.** The file may hold API keys, so lorarun writes it with mode 0600 (owner only), always. A file that holds
  a key and is readable by others (written by hand, copied, restored from a backup) is set to 0600 the first time
  lorarun reads it, with one line saying so.
- **Migrated.** Earlier versions kept the keys in `~/.lorarun/config.toml` (`$LORARUN_HOME/config.toml`). The first
  time lorarun looks at its config and finds that file, its content is merged into the user config (what the user
  config already says wins: nothing set there is overwritten), the old file is renamed `config.toml.migrated` (kept,
  not deleted), and one line says so. An old file that cannot be read is left where it is and named (never shown:
  its content may be a key).
- **Written whole, atomically.** Top-level settings first, then tables (`[vastai]`, `[runpod]`, and any table of the
  user's own, written back unchanged), to a temporary file created 0600 and renamed over the old one.

Notices go to `notify` (stderr by default): one line each, never a key.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lorarun.provider_adapters.user_files import legacy_config_path, user_config_path

KEY_TABLES = ("vastai", "runpod")  # tables whose `api_key` is a secret (credentials.ENV_VARS' providers)
PRIVATE_MODE = 0o600
MIGRATED_SUFFIX = ".migrated"

Notify = Callable[[str], None]
# What reading a broken file raises (tomllib.TOMLDecodeError is a ValueError; tomllib loads only where a file is read).
UNREADABLE = (OSError, UnicodeDecodeError, ValueError)


def stderr_notice(line: str) -> None:
    print(f"lorarun: {line}", file=sys.stderr)


def read_toml(path: Path) -> dict[str, Any]:
    """The file's settings; a missing file is no settings. Raises OSError / UnicodeDecodeError / TOMLDecodeError
    for a file that cannot be read (the caller names it; its content is never repeated)."""
    import tomllib  # here, not at the top: `lorarun --help` imports user_config, hence this module

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def holds_keys(data: Mapping[str, Any]) -> bool:
    return any(isinstance(data.get(t), dict) and data[t].get("api_key") for t in KEY_TABLES)


def write_toml(path: Path, data: Mapping[str, Any]) -> None:
    """The whole file, mode 0600, replacing the old one in one rename (a crash leaves the old or the new file)."""
    header = (
        "# lorarun's user settings: `lorarun config show` lists them (keys masked), `lorarun config set` changes them"
    )
    lines = [header]
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines += [f"{k} = {toml_value(v)}" for k, v in data.items() if k not in tables]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    import tempfile  # here: `lorarun --help` imports this module through user_config

    target = path.resolve()  # a config kept in a dotfiles repo and linked here stays a link
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        os.chmod(tmp, PRIVATE_MODE)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def prepare(env: Mapping[str, str] | None = None, home: Path | None = None, notify: Notify = stderr_notice) -> Path:
    """Before the user config is read or written: migrate the old file if there is one, make a file that holds
    keys private. Returns the user config's path. Never raises for the old file (a broken one is named)."""
    path = user_config_path(env, home)
    migrate_legacy(path, legacy_config_path(env, home), notify)
    make_private(path, notify)
    return path


def migrate_legacy(path: Path, legacy: Path, notify: Notify = stderr_notice) -> bool:
    """Merge `legacy` into `path` (values `path` already has win), keep `legacy` as `config.toml.migrated`.
    True when it moved something."""
    if not legacy.is_file() or legacy.resolve() == path.resolve():
        return False
    try:
        old = read_toml(legacy)
    except UNREADABLE as err:
        notify(f"could not move {legacy} into {path} ({type(err).__name__}); fix or remove the old file")
        return False
    try:
        new = read_toml(path)
    except UNREADABLE as err:
        notify(f"could not move {legacy} into {path}: that file cannot be read ({type(err).__name__})")
        return False
    write_toml(path, merged(old, new))
    legacy.replace(legacy.with_name(legacy.name + MIGRATED_SUFFIX))
    notify(f"moved the settings of {legacy} into {path} (the old file is kept as {legacy.name}{MIGRATED_SUFFIX})")
    return True


def merged(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """`old` under `new`: a table present in both is merged key by key, `new`'s values winning."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in old.items()}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def make_private(path: Path, notify: Notify = stderr_notice) -> bool:
    """A file holding a key that group or others can read becomes 0600, said once (after that it is 0600)."""
    if os.name == "nt":  # no POSIX modes: the file lives in the user's own profile folder
        return False
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if not mode & 0o077 or not holds_keys(read_toml(path)):
            return False
        os.chmod(path, PRIVATE_MODE)
    except UNREADABLE:
        return False  # missing or unreadable: whoever reads it next names the problem
    notify(f"{path} holds API keys and was readable by others (mode {mode:04o}); set it to 0600 (owner only)")
    return True


def store_api_key(
    provider: str,
    key: str,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    notify: Notify = stderr_notice,
) -> Path:
    """`[provider] api_key = key` in the user config (mode 0600), every other setting and table kept."""
    if provider not in KEY_TABLES:
        raise ValueError(f"no API key for provider {provider!r}; one of {', '.join(KEY_TABLES)}")
    path = prepare(env, home, notify)
    data = read_toml(path)
    table = data.get(provider)
    data[provider] = {**(table if isinstance(table, dict) else {}), "api_key": key}
    write_toml(path, data)
    return path
