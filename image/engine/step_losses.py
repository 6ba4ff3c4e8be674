"""Every optimizer step's loss for the report's chart, at no extra cost to training: the losses stay on the
device and are read in one transfer when the trainer reports progress (which syncs with the host anyway).
Progress reports are time-based (a few per minute), so without this an 82-step run charted 5 points."""

from __future__ import annotations

import torch


class StepLosses:
    def __init__(self, device: torch.device | str):
        self.device = device
        self._sum = torch.zeros((), device=device)
        self._count = 0
        self._steps: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        """A micro-batch's detached loss (several per optimizer step under gradient accumulation)."""
        self._sum = self._sum + loss.float()
        self._count += 1

    def end_step(self) -> None:
        """The optimizer stepped: its loss is the mean of the micro-batches since the last step."""
        self._steps.append(self._sum / max(self._count, 1))
        self._sum = torch.zeros((), device=self.device)
        self._count = 0

    def drain(self) -> list[float]:
        """The losses of the steps since the last drain, oldest first (one host transfer)."""
        if not self._steps:
            return []
        values = torch.stack(self._steps).tolist()
        self._steps = []
        return [round(float(v), 6) for v in values]
