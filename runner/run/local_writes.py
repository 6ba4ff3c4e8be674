""" "This laptop could not write it": the errors of the pull that keep the instance rather than lose its outputs (#27).

A full disk, a read-only output folder (a remounted disk), a folder without write permission: the instance still has
every output, so destroying it would lose them. Wherever such an error happens in the pull — the file write itself
(monitor.py), removing a bad copy before pulling it again (outputs_home.py), the report, the events log — the
pipeline keeps the instance for its grace window and says what to fix; `lorarun attach` finishes the pull.

Only errors raised by this machine's file system count. ENOSPC, EDQUOT, EFBIG and EROFS never come from SFTP (paramiko
maps an SFTP status only to ENOENT or EACCES, and to no errno otherwise: paramiko/sftp_client.py `_convert_status`),
so they are always local; EACCES/EPERM count only with a file name, which the local calls (open, mkdir, unlink,
rename) set and paramiko's never does.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

ALWAYS_LOCAL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
LOCAL_WITH_A_NAME = frozenset({errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG})
LOCAL_ERRNOS = ALWAYS_LOCAL | LOCAL_WITH_A_NAME


def is_local_write_error(exc: BaseException) -> bool:
    if not isinstance(exc, OSError) or exc.errno not in LOCAL_ERRNOS:
        return False
    return exc.errno in ALWAYS_LOCAL or exc.filename is not None


def describe(exc: OSError) -> str:
    """`Read-only file system writing /out/x.safetensors` (the strerror, not Python's `[Errno 30]` repr)."""
    why = exc.strerror or str(exc)
    return f"{why} writing {exc.filename}" if exc.filename else why


def fix_advice(why: str, output_dir: Path, size: int = 0) -> str:
    """What to do about `why` (an OSError's text), as ` — free at least 12.3 MB in /out (1.0 MB free now)`."""
    lowered = why.lower()
    if "no space" in lowered or "quota" in lowered or "too large" in lowered:
        try:
            free = shutil.disk_usage(existing_parent(output_dir)).free
        except OSError:
            return f" — free at least {_mb(size)} in {output_dir}"
        return f" — free at least {_mb(size)} in {output_dir} ({_mb(free)} free now)"
    if "read-only" in lowered:
        return f" — {output_dir} is on a read-only file system: remount it read-write (or free the folder)"
    if "ermission" in lowered or "not permitted" in lowered:
        return f" — make {output_dir} writable for this user"
    if "not a directory" in lowered or "is a directory" in lowered or "too long" in lowered:
        return f" — a path under {output_dir} is in the way: move it"
    return ""


def existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mb(n: int) -> str:
    return f"{max(n, 1) / 1e6:.1f} MB"
