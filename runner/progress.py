"""Progress displays (rich): bytes for transfers; steps, loss, it/s, ETA and dollars for training."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .console import err_console, money
from .remote.transport import ProgressFn


@contextmanager
def transfer_bar(description: str) -> Iterator[ProgressFn]:
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=err_console, transient=False)
    with progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        yield update


class TrainingView:
    """step/total, loss, it/s, ETA, $ spent so far and projected for the whole run."""

    def __init__(self, total_steps: int, price_per_hour: float, max_cost: float | None):
        self.price_per_hour = price_per_hour
        self.max_cost = max_cost
        self.progress = Progress(
            TextColumn("[bold]training[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(), TextColumn("{task.fields[money]}"),
            console=err_console,
        )
        self.task: TaskID | None = None
        self.total_steps = total_steps

    def __enter__(self) -> "TrainingView":
        self.progress.__enter__()
        self.task = self.progress.add_task("train", total=self.total_steps or None, loss="-", speed="", money="")
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, state, spent: float) -> None:
        total = state.total_steps or self.total_steps
        fraction = state.step / total if total else 0.0
        projected = spent / fraction if fraction > 0.02 else None
        money_text = f"{money(spent)} spent"
        if projected is not None and self.price_per_hour > 0:
            money_text += f", ~{money(projected)} projected"
        if self.max_cost is not None:
            money_text += f" (max {money(self.max_cost)})"
        self.progress.update(
            self.task, completed=state.step, total=total or None,
            loss=f"{state.loss:.4f}" if isinstance(state.loss, (int, float)) else "-",
            speed=f"{state.it_s:.2f} it/s" if isinstance(state.it_s, (int, float)) else "",
            money=money_text if self.price_per_hour > 0 else "",
        )
