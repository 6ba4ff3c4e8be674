"""Progress displays (rich): bytes for transfers; steps, loss, it/s, ETA and dollars for training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lorarun.runner.console import err_console, money, views_hidden
from lorarun.sshlink.transport import ProgressFn


@contextmanager
def transfer_bar(description: str) -> Iterator[ProgressFn]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=views_hidden(),  # a batch's rental thread: the batch table shows it
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        yield update


PHASE_LABELS = {
    "model_download": "model download",
    "caching_latents": "caching latents",
    "caching_text": "caching captions",
    "sampling": "sampling",
    "sampling_grid": "sampling grid",
}


def _amount(done: int, total: int | None, unit: str) -> str:
    if unit == "bytes":
        return decimal(done) + (f" of {decimal(total)}" if total else "")
    return f"{done}/{total} {unit}" if total is not None else f"{done} {unit}"


class TrainingView:
    """One line per phase of the job on the instance, each as it begins: model download (bytes), caching N/M,
    training (step/total, loss, it/s, ETA, $ spent / projected), sampling k/n. A finished phase keeps its line
    with a tick, so the screen reads as the job's history."""

    def __init__(self, total_steps: int, price_per_hour: float, max_cost: float | None):
        self.price_per_hour = price_per_hour
        self.max_cost = max_cost
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("[bold]{task.description:<16}[/]"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            console=err_console,
            disable=views_hidden(),  # a batch's rental thread: the batch table shows it
        )
        self.tasks: dict[str, TaskID] = {}
        self.seen: dict[str, tuple[int, int | None]] = {}
        self.total_steps = total_steps

    def __enter__(self) -> TrainingView:
        self.progress.__enter__()
        self._task("starting", "engine starting", None, "")
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _task(self, key: str, label: str, total: int | None, detail: str) -> TaskID:
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(label, total=total, detail=detail)
        return self.tasks[key]

    def _finish(self, key: str) -> None:
        if key in self.tasks:
            task = self.progress.tasks[self.tasks[key]]
            if not task.finished:
                self.progress.update(self.tasks[key], total=task.total or 1, completed=task.total or 1)

    def update(self, state, spent: float) -> None:
        phases = dict(getattr(state, "phases", {}) or {})
        if phases or state.step:
            self._finish("starting")
        for name, (done, total, unit) in phases.items():
            if name not in self.tasks:
                for earlier in list(self.tasks):  # a new phase means the ones before it are over
                    if earlier != "training" or state.outcome:
                        self._finish(earlier)
            if self.seen.get(name) == (done, total):
                continue  # unchanged: leave it as it stands (possibly ticked off by a later phase)
            self.seen[name] = (done, total)
            task = self._task(name, PHASE_LABELS.get(name, name.replace("_", " ")), total, "")
            self.progress.update(task, completed=done, total=total, detail=_amount(done, total, unit))
        total = state.total_steps or self.total_steps
        if state.step or (total and "training" in self.tasks):
            task = self._task("training", "training", total or None, "")
            self.progress.update(
                task, completed=state.step, total=total or None, detail=self._training_detail(state, total, spent)
            )
        pulled = list(getattr(state, "pulled", {}) or {})
        if pulled:  # outputs come home while training goes on: say so, with the latest one's name
            task = self._task("outputs", "outputs home", None, "")
            self.progress.update(task, detail=f"{len(pulled)} file(s), latest {pulled[-1]}")
        if state.outcome:
            for key in list(self.tasks):
                if key != "training":
                    self._finish(key)

    def _training_detail(self, state, total: int, spent: float) -> str:
        parts = [f"{state.step}/{total or '?'}"]
        if isinstance(state.loss, (int, float)):
            parts.append(f"loss {state.loss:.4f}")
        if isinstance(state.it_s, (int, float)) and state.it_s > 0:
            parts.append(f"{state.it_s:.2f} it/s")
            if total and state.step < total:
                parts.append(f"ETA {_clock(int((total - state.step) / state.it_s))}")
        if self.price_per_hour > 0:
            fraction = state.step / total if total else 0.0
            text = f"{money(spent)} spent"
            if fraction > 0.02:
                text += f", ~{money(spent / fraction)} projected"
            if self.max_cost is not None:
                text += f" (max {money(self.max_cost)})"
            parts.append(text)
        return " · ".join(parts)


def _clock(seconds: int) -> str:
    hours, rest = divmod(max(0, seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


@contextmanager
def pull_bar(description: str = "pulling files") -> Iterator:
    """`progress(done, total, name)` for the final pull of the outputs (k/n files, and which one)."""
    progress = Progress(
        SpinnerColumn(finished_text="[green]✓[/]"),
        TextColumn("[bold]{task.description:<16}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[name]}"),
        console=err_console,
        disable=views_hidden(),  # a batch's rental thread: the batch table shows it
    )
    with progress:
        task: list[TaskID] = []

        def update(done: int, total: int, name: str) -> None:
            if not task:
                task.append(progress.add_task(description, total=total, name=name))
            progress.update(task[0], completed=done, total=total, name=name)

        yield update
