"""A folder that really turns read-only mid-test (a remounted disk): a read-only bind mount of itself.

`ReadOnlyFolder(path).engage()` makes every write under `path` fail with EROFS from the kernel, as a disk remounted
read-only does; `release()` makes it writable again (the user fixed it). Needs the right to mount (root with
CAP_SYS_ADMIN, as in CI's container); elsewhere the test skips and says why. Only `path` is affected, never anything
outside it, and `release()` always runs from the fixture, so a failed test leaves no mount behind.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


class ReadOnlyFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.engaged = False

    def engage(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        p = str(self.path)
        subprocess.run(["mount", "--bind", p, p], check=True, capture_output=True)
        self.engaged = True
        subprocess.run(["mount", "-o", "remount,ro,bind", p], check=True, capture_output=True)

    def release(self) -> None:
        if self.engaged:
            subprocess.run(["umount", str(self.path)], check=True, capture_output=True)
            self.engaged = False


def can_mount(probe: Path) -> bool:
    folder = ReadOnlyFolder(probe)
    try:
        folder.engage()
    except (OSError, subprocess.CalledProcessError):
        folder.release()
        return False
    try:
        (probe / "x").write_bytes(b"")
    except OSError:
        return True
    finally:
        folder.release()
    return False  # mounted, yet still writable: not a read-only folder


@pytest.fixture
def read_only_folder(tmp_path):
    """Factory: `read_only_folder(path)` → a ReadOnlyFolder, released at the end of the test whatever happens."""
    if not can_mount(tmp_path / "mount-probe"):
        pytest.skip("cannot mount a read-only bind mount here (needs root with CAP_SYS_ADMIN)")
    made: list[ReadOnlyFolder] = []

    def make(path: Path) -> ReadOnlyFolder:
        made.append(ReadOnlyFolder(path))
        return made[-1]

    yield make
    for folder in made:
        folder.release()
