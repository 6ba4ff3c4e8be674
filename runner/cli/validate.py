"""`lorarun validate JOB`: spec + dataset, no network; a summary table a kohya user recognises."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from lorarun.runner.console import console, err_console
from lorarun.runner.errors import InvalidJob

if TYPE_CHECKING:
    from lorarun.runner.job.validate import ValidatedJob

# The validator is imported inside the command: `lorarun --help` imports this module to list the command.


def register(app: typer.Typer) -> None:
    app.command("validate", help="Check a job file and its dataset (no network, costs nothing).")(validate)


def validate(job: Path = typer.Argument(..., help="Job file: lorarun YAML or a kohya training TOML.")) -> None:
    from lorarun.runner.job.validate import validate_job

    try:
        validated = validate_job(job)
    except InvalidJob as exc:
        partial = getattr(exc, "job", None)
        if partial is not None:  # the dataset and the steps could be judged: show them above the problems
            print_summary(partial)
        raise
    print_summary(validated)
    from lorarun.runner.job.output_guard import outputs_notice

    notice = outputs_notice(validated)  # another job's files, or an earlier run's: submit refuses them (#24)
    if notice:
        err_console.print(f"[yellow]warning:[/] {escape(notice)}", highlight=False)
    console.print(f"[green]ok[/] {escape(str(job))} is valid: {validated.total_steps} steps")


def print_summary_notes(job: ValidatedJob) -> None:
    """The notes and warnings of a validated job (stderr), each escaped: they quote file names and fields."""
    for note in (*job.spec.notes, *job.notes):
        err_console.print(f"[dim]note:[/] {escape(note)}", highlight=False)
    for warning in (*job.scan.warnings, *job.warnings):
        err_console.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False)


def print_summary(job: ValidatedJob) -> None:
    spec, scan = job.spec, job.scan
    print_summary_notes(job)
    table = Table(title=escape(f"{spec.name}: dataset {spec.dataset_dir}"), title_justify="left")
    for column in ("folder", "images", "repeats", "images × repeats", "captions", "missing captions"):
        table.add_column(column, justify="left" if column == "folder" else "right")
    for subset in scan.subsets:
        folder = f"{subset.folder} (reg)" if subset.is_reg else subset.folder
        table.add_row(
            escape(folder),
            str(len(subset.images)),
            str(subset.repeats),
            str(len(subset.images) * subset.repeats),
            str(subset.captions_found),
            str(subset.captions_missing),
        )
    console.print(table)
    t = spec.training
    buckets = scan.bucket_counts()
    console.print(
        f"model [bold]{spec.model.family}[/] {escape(spec.model.base)} · resolution {spec.dataset.resolution[0]}x"
        f"{spec.dataset.resolution[1]} · {len(buckets)} bucket(s) · batch {t.batch_size}"
        + (f" × accumulation {t.gradient_accumulation_steps}" if t.gradient_accumulation_steps > 1 else "")
    )
    console.print(
        f"training images {scan.num_train_images}"
        + (f" + regularisation {scan.num_reg_images}" if scan.num_reg_images else "")
        + f" · steps per epoch {job.steps_per_epoch} · epochs {job.epochs} · total steps [bold]{job.total_steps}[/]"
    )
    console.print(
        f"LoRA dim {t.network_dim} alpha {t.network_alpha:g} · optimizer {t.optimizer_type} · "
        f"scheduler {t.lr_scheduler} · save every {t.save_every_n_epochs or '-'} epoch(s) · "
        f"provider {spec.resources.provider or 'not chosen (submit asks; lorarun config set provider …)'} · "
        f"output {escape(str(spec.output_dir / (spec.output.name + '.safetensors')))}"
    )
