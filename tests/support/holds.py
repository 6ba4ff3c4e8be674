"""The test side of the hold points (image/hold_points.py): name the points a process must stop at, wait until it is
there, act, release it. A process held at a point stays there, so a test that waits for `reached` never races it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from lorarun.image.hold_points import HOLD_DIR_ENV, HOLD_ENV, marker_stem


class HoldPoints:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def env(self, *points: str) -> dict[str, str]:
        """The environment that makes a process (and its children) hold at `points`."""
        return {HOLD_ENV: ",".join(points), HOLD_DIR_ENV: str(self.folder)}

    def _marker(self, point: str, kind: str) -> Path:
        return self.folder / f"{marker_stem(point)}.{kind}"

    def wait_reached(self, point: str, proc: subprocess.Popen | None = None, timeout: float = 240.0) -> int:
        """The pid held at `point`, once it is there. Raises if `proc` ends first (it cannot reach the point any
        more) or after `timeout` (the point was never reached: a bug, not a slow machine at these sizes)."""
        marker = self._marker(point, "reached")
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                raise AssertionError(f"the process ended (exit {proc.returncode}) before hold point {point!r}: {err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"hold point {point!r} not reached in {timeout:.0f} s")
            time.sleep(0.05)  # waiting for a marker that stays once written: no window to miss
        return int(marker.read_text())

    def release(self, point: str) -> None:
        self._marker(point, "release").touch()
