"""The user's own defaults (`lorarun config set provider vastai`): where jobs go and what they may cost.

A job inherits each of these unless its own file sets it; a command-line flag beats both:
`--provider` > the job file (`resources:` / kohya `[lorarun]`) > this file > lorarun's built-in default.

Where it lives: `$LORARUN_CONFIG` when set (tests, several setups); otherwise the platform's configuration folder:
`$XDG_CONFIG_HOME/lorarun/config.toml` (default `~/.config/lorarun/config.toml`) on Linux and BSD,
`~/Library/Application Support/lorarun/config.toml` on macOS, `%APPDATA%\\lorarun\\config.toml` on Windows.
The same file holds the API keys (`[vastai]` / `[runpod]` `api_key`, read by provider_adapters/credentials.py): this
module reads and writes only the top-level settings and writes every table back as it was. The path, the 0600 mode
and the migration from the old `~/.lorarun/config.toml` are provider_adapters/user_files.py and config_file.py.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorarun.provider_adapters import config_file
from lorarun.provider_adapters.user_files import user_config_path
from lorarun.runner.errors import UserInputError


def _provider(value: str) -> str:
    from lorarun.runner.job.spec import PROVIDERS

    value = value.strip()
    if value not in PROVIDERS:
        raise ValueError(f"unknown provider {value!r}; use one of {', '.join(PROVIDERS)}")
    return value


def _gpus(value: str | list) -> list[str]:
    names = value if isinstance(value, list) else value.split(",")
    out = [str(n).strip() for n in names if str(n).strip()]
    if not out:
        raise ValueError('give one or more GPU names, comma-separated, e.g. "RTX 4090,RTX 3090"')
    return out


def _dollars(value: str | float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number of dollars") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"must be a positive number of dollars, got {value}")
    return number


def _count(value: str | int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a whole number") from None
    if not 1 <= number <= 16:
        raise ValueError(f"must be between 1 and 16, got {number}")
    return number


def _text(value: str) -> str:
    value = str(value).strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("give an image reference without spaces, e.g. ghcr.io/me/lorarun-engine:0.2.0")
    return value


def _interruptible(value: str | bool) -> str:
    from lorarun.runner.job.spec import INTERRUPTIBLE_MODES, interruptible_mode

    mode = interruptible_mode(value)
    if mode not in INTERRUPTIBLE_MODES:
        raise ValueError(f"{value!r}: use one of {', '.join(INTERRUPTIBLE_MODES)}")
    return mode


@dataclass(frozen=True)
class Key:
    name: str  # as in the job's resources section, so one name means one thing everywhere
    parse: Callable[[Any], Any]
    help: str


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("provider", _provider, "where jobs run when the job file does not say: local, ssh, vastai or runpod"),
        Key("gpus", _gpus, 'acceptable GPU names, comma-separated (e.g. "RTX 4090,RTX 3090")'),
        Key("gpu_count", _count, "GPUs per instance"),
        Key("max_price_per_hour", _dollars, "skip offers above this hourly price (dollars)"),
        Key("max_cost", _dollars, "refuse jobs predicted above this, stop a job when its spend reaches it (dollars)"),
        Key(
            "interruptible",
            _interruptible,
            "rent interruptible machines (Vast bids, RunPod spot): never, allowed or prefer; an interruption "
            "is resumed on a new rental from the last checkpoint",
        ),
        Key("image", _text, "the engine image instances run (lorarun image build --push makes one)"),
        Key(
            "cost_ceiling",
            _dollars,
            "refuse a job without max_cost predicted above this, even with --yes "
            "(dollars; default 50, runner/price/budget.py)",
        ),
    )
}
ALIASES = {"max_price": "max_price_per_hour", "gpu": "gpus"}


def config_path(env: Mapping[str, str] | None = None) -> Path:
    return user_config_path(env)


def _prepared(path: Path | None) -> Path:
    """`path`, or the user config once the old file is migrated into it and its mode checked (config_file.py)."""
    return path or config_file.prepare()


def canonical(key: str) -> str:
    name = ALIASES.get(key, key)
    if name not in KEYS:
        from lorarun.image.schema import closest

        hint = closest(key, list(KEYS))
        raise UserInputError(
            f"config: unknown key {key!r}"
            + (f"; did you mean {hint!r}?" if hint else f"; known keys: {', '.join(KEYS)}")
        )
    return name


def load(path: Path | None = None) -> dict[str, Any]:
    """The settings in the file, each checked; a missing file is no settings. A bad file is one line to fix."""
    import tomllib  # where a file is read: `lorarun --help` imports this module (bench/cli_startup.py)

    path = _prepared(path)
    try:
        data = config_file.read_toml(path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read the lorarun config ({exc}); fix or remove the file") from None
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key not in KEYS:
            continue  # a newer lorarun's key, or a table of the user's own: left alone, never an error
        try:
            settings[key] = KEYS[key].parse(value)
        except ValueError as exc:
            raise UserInputError(f"{path}: {key}: {exc}; fix it with `lorarun config set {key} …`") from None
    return settings


def set_value(key: str, value: str, path: Path | None = None) -> Any:
    path = _prepared(path)
    name = canonical(key)
    try:
        parsed = KEYS[name].parse(value)
    except ValueError as exc:
        raise UserInputError(f"config {name}: {exc}") from None
    data = _read_raw(path)
    data[name] = parsed
    _write(path, data)
    return parsed


def unset_value(key: str, path: Path | None = None) -> bool:
    path = _prepared(path)
    name = canonical(key)
    data = _read_raw(path)
    if name not in data:
        return False
    del data[name]
    _write(path, data)
    return True


def _read_raw(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        return config_file.read_toml(path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read the lorarun config ({exc}); fix or remove the file") from None


def _write(path: Path, data: dict[str, Any]) -> None:
    """The whole file, the API key tables and the user's own tables written back unchanged, mode 0600."""
    config_file.write_toml(path, data)


def job_resource_keys(source: str | Path) -> set[str]:
    """The resources keys the job file itself sets (YAML `resources:`, kohya TOML `[lorarun]`)."""
    import tomllib

    import yaml  # here, not at the top: `lorarun config`'s help reads this module's KEYS, and must start fast

    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            section = tomllib.loads(text).get("lorarun") or {}
        else:
            section = (yaml.safe_load(text) or {}).get("resources") or {}
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        return set()
    return {str(k) for k in section} if isinstance(section, dict) else set()


def inherit(spec, settings: Mapping[str, Any] | None = None):
    """`spec` with the user's settings filled in wherever its own file is silent."""
    settings = load() if settings is None else settings
    own = job_resource_keys(spec.source)
    changes = {k: (tuple(v) if k == "gpus" else v) for k, v in settings.items() if k not in own}
    changes = {k: v for k, v in changes.items() if k in RESOURCE_KEYS}
    if not changes:
        return spec
    where = shown_path(config_path())
    changes["inherited_from"] = tuple((k, where) for k in changes)
    return dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, **changes))


# The settings that are fields of a job's `resources` (cost_ceiling is read by the budget check itself).
RESOURCE_KEYS = ("provider", "gpus", "gpu_count", "max_price_per_hour", "max_cost", "image")


def shown_path(path: Path) -> str:
    """The path as a user recognises it: under the home folder as ~/…."""
    try:
        return "~/" + path.expanduser().relative_to(Path.home()).as_posix()
    except ValueError:
        return str(path)
