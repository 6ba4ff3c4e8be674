"""Help text in words a user reads, not Python's types: recent typer releases (0.2x, `typer/core.py`
`_TyperParameter.display_type`) label each parameter `<bool>`, `<str>`, `<list[Path]>`, `<path>`; click and older
typer showed `TEXT`, `PATH`, nothing for a flag. This puts the plain labels back: a flag shows no type, a file or
folder `PATH`, text `TEXT`, numbers `INTEGER`/`NUMBER`; an argument taking several a trailing `...` (an option
given several times shows one value). A parameter with its
own `metavar` keeps it. Where typer has no `display_type` (older releases) there is nothing to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

_WORDS: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}


def plain_label(annotation: Any, is_flag: bool = False, several: bool = True) -> str | None:
    """The word shown for a parameter of this annotation (None: show nothing, as for a flag)."""
    if is_flag or annotation is bool:
        return None
    if get_origin(annotation) in (list, tuple):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        inner = (plain_label(args[0]) if args else None) or "TEXT"
        return f"{inner}..." if several else inner
    return _WORDS.get(annotation, "TEXT")


def use_plain_type_labels() -> None:
    try:
        from typer import core
    except ImportError:  # pragma: no cover - typer is a dependency
        return
    base = getattr(core, "_TyperParameter", None)
    if base is None or not hasattr(base, "display_type") or getattr(base, "_lorarun_plain", False):
        return

    def display_type(self, ctx) -> str | None:
        descriptor = getattr(self, "type_descriptor", None)
        annotation = getattr(descriptor, "annotation", None)
        choices = getattr(descriptor, "choices", None)
        if getattr(descriptor, "is_choice", False) and choices:
            return "|".join(str(c) for c in choices)
        is_option = getattr(self, "param_type_name", "") == "option"
        return plain_label(annotation, bool(getattr(self, "is_flag", False)), several=not is_option)

    def display_type_rich(self, ctx) -> str | None:
        if self.metavar is not None:
            return self.metavar or None
        return display_type(self, ctx)

    base.display_type = display_type
    base.display_type_rich = display_type_rich
    for cls in (getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)):
        if cls is not None and "display_type_rich" in vars(cls):
            cls.display_type_rich = display_type_rich  # TyperOption overrides it (adds "..." for nargs)
    base._lorarun_plain = True
