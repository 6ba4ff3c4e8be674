"""Build frozen dataclasses from parsed YAML/JSON/TOML with precise, one-line errors.

Every error names the dotted field path (`training.unet_lr`) and what to do; an unknown key names the closest
known one. Shared by the job spec (laptop) and the engine config (instance), so both reject the same things.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance  # typing only: the protocol every dataclass meets

T = TypeVar("T", bound="DataclassInstance")


class ConfigError(ValueError):
    """A configuration value is wrong; the message is one line a user can act on. `problems` lists every such
    line when several were found at once (the first is the message)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems else [message]
        self.partial: dict[str, Any] | None = None


def closest(name: str, candidates: list[str]) -> str | None:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_key_message(where: str, key: str, known: list[str]) -> str:
    hint = closest(key, known)
    suggestion = f"; did you mean {hint!r}?" if hint else f"; known keys: {', '.join(sorted(known))}"
    return f"{where}: unknown key {key!r}{suggestion}"


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """Instantiate dataclass `cls` from a mapping, converting and checking every field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    problems: list[str] = []  # every bad key of the mapping, not just the first
    for key, raw in data.items():
        key = str(key)
        if key not in known:
            problems.append(unknown_key_message(where, key, list(known)))
            continue
        try:
            values[key] = convert(hints[key], raw, f"{where}.{key}" if where else key)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        error = ConfigError(problems[0], problems)
        error.partial = values  # the keys that did convert: a caller may still judge them (ranges)
        raise error
    missing = [
        name
        for name, f in known.items()
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")
    return cls(**values)


def convert(tp: Any, raw: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return convert(option, raw, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {_describe(raw)} is not valid here")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_mapping(tp, raw, where)
    if origin is tuple:
        if args and args[-1] is Ellipsis:
            items = raw if isinstance(raw, (list, tuple)) else [raw]
            return tuple(convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(items))
        if isinstance(raw, (int, float)) and not isinstance(raw, bool) and len(set(args)) == 1:
            return tuple(convert(args[0], raw, where) for _ in args)  # 512 → (512, 512)
        if isinstance(raw, str) and "," in raw and len(set(args)) == 1:
            raw = [p.strip() for p in raw.split(",")]  # kohya writes resolution = "512,768"
        if not isinstance(raw, (list, tuple)) or len(raw) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {_describe(raw)}")
        return tuple(convert(a, item, f"{where}[{i}]") for i, (a, item) in enumerate(zip(args, raw)))
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "yes", "no"):
            return raw.lower() in ("true", "yes")
        raise ConfigError(f"{where}: expected true or false, got {_describe(raw)}")
    if tp is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{where}: expected a whole number, got {_describe(raw)}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a whole number, got {_describe(raw)}")
    if tp is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{where}: expected a number, got {_describe(raw)}")
        value = None
        if isinstance(raw, (int, float)):
            try:
                value = float(raw)
            except OverflowError:  # an int too large for a float
                raise ConfigError(f"{where}: {_describe(raw)} is not a finite number") from None
        elif isinstance(raw, str):
            try:
                value = float(raw.strip())  # YAML reads "1e-4" as a string
            except ValueError:
                pass
        if value is None:
            raise ConfigError(f"{where}: expected a number, got {_describe(raw)}")
        if not math.isfinite(value):  # .nan, .inf, "nan", "1e999": never a setting anyone means
            raise ConfigError(f"{where}: {_describe(raw)} is not a finite number; give a real value")
        return value
    if tp is str:
        if isinstance(raw, str):
            return raw
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return str(raw)
        raise ConfigError(f"{where}: expected text, got {_describe(raw)}")
    if tp is Any:
        return raw
    raise TypeError(f"schema: unsupported field type {tp!r} at {where}")  # a bug in lorarun, not user input


def _describe(raw: Any) -> str:
    if isinstance(raw, str):
        return repr(raw if len(raw) < 40 else raw[:37] + "...")
    if isinstance(raw, dict):
        return "a mapping"
    if isinstance(raw, (list, tuple)):
        return f"a list of {len(raw)}"
    return repr(raw)
