"""`lorarun validate JOB`: spec + dataset, no network; a summary table a kohya user recognises."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from lorarun.runner.console import console, err_console
from lorarun.runner.job.validate import ValidatedJob, validate_job


def register(app: typer.Typer) -> None:
    app.command("validate", help="Check a job file and its dataset (no network, costs nothing).")(validate)


def validate(job: Path = typer.Argument(..., help="Job file: lorarun YAML or a kohya training TOML.")) -> None:
    validated = validate_job(job)
    print_summary(validated)
    console.print(f"[green]ok[/] {job} is valid: {validated.total_steps} steps")


def print_summary(job: ValidatedJob) -> None:
    spec, scan = job.spec, job.scan
    for note in (*spec.notes, *job.notes):
        err_console.print(f"[dim]note:[/] {note}", highlight=False)
    for warning in scan.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    table = Table(title=f"{spec.name}: dataset {spec.dataset_dir}", title_justify="left")
    for column in ("folder", "images", "repeats", "images × repeats", "captions", "missing captions"):
        table.add_column(column, justify="left" if column == "folder" else "right")
    for subset in scan.subsets:
        folder = f"{subset.folder} (reg)" if subset.is_reg else subset.folder
        table.add_row(
            folder,
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
        f"model [bold]{spec.model.family}[/] {spec.model.base} · resolution {spec.dataset.resolution[0]}x"
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
        f"provider {spec.resources.provider or 'not chosen (submit asks; lorarun config set provider …)'} · output {spec.output_dir / (spec.output.name + '.safetensors')}"
    )
