"""Bytes of the base model arriving, while diffusers downloads it from the hub: a thread watches the hub cache grow
and reports through `progress` events (phase model_download), so a multi-GB download is not minutes of silence.

The hub cache (huggingface_hub `constants.py`): `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
`$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`; files land as `blobs/<hash>.incomplete` and are
renamed when complete, so the folder's size is what has arrived."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from lorarun.image.engine.events import EventLog, PhaseProgress


def hub_cache_dir() -> Path:
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]) / "hub"
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def folder_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size  # lstat: snapshot links are not counted twice
            except OSError:
                continue  # renamed from .incomplete between listing and stat
    return total


class DownloadWatch:
    """`with DownloadWatch(events, repo_id):` around the model load. Reports only when bytes actually arrive (a
    cached model loads without a single progress event)."""

    def __init__(self, events: EventLog, repo_id: str, interval: float = 1.0):
        slug = "models--" + repo_id.replace("/", "--")
        self.root = hub_cache_dir() / slug
        self.report = PhaseProgress(events, "model_download", None, unit="bytes", min_interval=interval)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="download-watch", daemon=True)
        self._start_bytes = 0
        self._reported = False

    def __enter__(self) -> DownloadWatch:
        self._start_bytes = folder_bytes(self.root) if self.root.exists() else 0
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._reported:  # close the phase with its final size, so the controller's bar ends complete
            grown = self._grown()
            self.report(grown, grown)

    def _grown(self) -> int:
        return max(0, (folder_bytes(self.root) if self.root.exists() else 0) - self._start_bytes)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            grown = self._grown()
            if grown > 0:
                self._reported = True
                self.report(grown)
