"""`lorarun image build|show`: the instance image, built on this machine with Docker (controller: image_build)."""

from __future__ import annotations

from pathlib import Path

import typer

from lorarun.runner.console import console, err_console

# The controller is imported inside the command: `lorarun --help` imports this module to list the command.

image_app = typer.Typer(help="Build, push and inspect the instance image (needs Docker).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")


@image_app.command("build", help="Build the instance image from this checkout's Dockerfile; --push to a registry.")
def build(
    tag: str | None = typer.Option(
        None, "--tag", help="REGISTRY/NAME[:TAG]; the tag defaults to <version>-<content hash>."
    ),
    push: bool = typer.Option(False, "--push", help="Push with Docker's own credentials (docker login)."),
    base: str | None = typer.Option(
        None, "--base", help="Base image (a CUDA runtime with torch); default: the Dockerfile's BASE_IMAGE."
    ),
) -> None:
    from lorarun.runner.run import image_build

    configured, _ = image_build.configured_image()
    with err_console.status("docker build", spinner="dots") as status:

        def progress(line: str) -> None:
            if line.startswith(("Step ", "building ", "pushing ")):
                err_console.print(f"[dim]{line}[/]", highlight=False)
                status.update(line[:100])
            else:
                status.update(line[:100])

        result = image_build.build(base=base, tag=tag, configured=configured, push=push, progress=progress)
    console.print(
        f"[green]built[/] {result.tag} ({result.size_bytes / 1e9:.2f} GB, {result.seconds:.0f} s)"
        + (" [green]pushed[/]" if result.pushed else "")
    )
    if not result.pushed:
        console.print(f"use it: resources.image: {result.tag} (a provider can only pull it once it is pushed)")


@image_app.command("show", help="Print the image a job will use and whether the registry has it.")
def show(job: Path | None = typer.Argument(None, help="Job file (default: the configured image).")) -> None:
    from lorarun.runner.run import image_build

    job_image = None
    if job is not None:
        from lorarun.runner.job.load import load_job

        job_image = load_job(job).resources.image
    name, source = image_build.image_for_job(job_image)
    status = image_build.show(name, source)
    yes_no = {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]unknown[/]"}
    console.print(f"image     {status.name}  [dim]({status.source})[/]")
    console.print(f"local     {yes_no[status.local]}")
    console.print(f"registry  {yes_no[status.registry]}" + (f"  [dim]{status.note}[/]" if status.note else ""))
