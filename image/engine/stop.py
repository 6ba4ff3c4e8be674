"""How the engine stops: SIGTERM/SIGINT turned into a flag the training loop checks, and the two ways a run ends
early (a stop asked for, a loss that is no longer finite). Shared by the entry point (`train.py`) and the loop
(`trainer.py`)."""

from __future__ import annotations

import signal

STOP_CHECK_EVERY = 4  # optimizer steps between stop checks in a data-parallel run


class LossNotFinite(Exception):
    """The loss became NaN or infinite: every step from here writes garbage, so the run stops (no checkpoint)."""


class Stopped(Exception):
    """SIGTERM/SIGINT arrived; the current state has been saved."""


class StopFlag:
    """Turns SIGTERM (and SIGINT) into a flag the loop checks after each optimizer step."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (tests calling train() from a thread): no handler
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
