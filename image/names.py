"""What a LoRA's file name may be: the POSIX portable file-name characters, a length every file system and the
engine's suffixes (`-000004.safetensors`, `-samples/`) fit in, and never `.`/`..` or a leading dot or dash.

Checked at `validate` on the laptop and again by the engine, so a name that cannot be saved never reaches a rented
GPU (`'..'` lost the LoRA at pull; a NUL or a 250-character name failed the save on the instance)."""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 100  # + "-000004.safetensors" stays far below the 255 bytes of a file name
_PORTABLE = re.compile(r"^[A-Za-z0-9._-]+$")


def output_name_problem(name: str, field: str = "output.name") -> str | None:
    """The one-line problem with `name` as the LoRA's file name (without .safetensors), or None."""
    if not name:
        return f"{field}: is empty; give a file name like 'mychar_v1'"
    if name in (".", ".."):
        return f"{field}: {name!r} is not a file name; give one like 'mychar_v1'"
    if len(name) > MAX_NAME_LENGTH:
        return f"{field}: {len(name)} characters is too long; use at most {MAX_NAME_LENGTH}"
    if not _PORTABLE.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9._-]", c)})
        shown = ", ".join(repr(c) for c in bad[:5])
        return (
            f"{field}: {name!r} has characters that are not portable in file names ({shown}); use letters, "
            f"digits, '.', '_' and '-'"
        )
    if name[0] in ".-":
        return f"{field}: {name!r} must not start with {name[0]!r} (hidden file / command-line option)"
    return None
