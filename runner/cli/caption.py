"""`lorarun caption DATASET`: caption a kohya dataset's images with Florence-2 or BLIP, on this machine
(`--provider local`) or on a rented GPU through the same pipeline as training (rent, upload, run the engine,
pull, destroy). Captions land beside the images as `.txt`; existing ones are kept unless `--overwrite`."""

from __future__ import annotations

from pathlib import Path

import typer

from lorarun.runner.errors import UserInputError


def register(app: typer.Typer) -> None:
    app.command("caption", help="Write captions for a dataset's images (Florence-2 or BLIP), locally or rented.")(
        caption
    )


def caption(
    dataset: Path = typer.Argument(..., help="The kohya dataset folder (<repeats>_<tokens>/ sub-folders of images)."),
    model: str = typer.Option(
        "florence2", "--model", "-m", help="florence2, florence2-base, blip (sentences) or wd14 (Danbooru tags)."
    ),
    provider: str = typer.Option(None, "--provider", "-p", help="local, ssh, vastai or runpod."),
    trigger: str = typer.Option(
        None, "--trigger", help="Word put first in every caption (default: the folder's class tokens; '' for none)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing captions too."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before renting."),
    max_cost: float = typer.Option(None, "--max-cost", help="Refuse offers predicted above this many dollars."),
) -> None:
    from lorarun.image.caption_config import caption_problems
    from lorarun.runner.cli.submit import submit
    from lorarun.runner.state import lorarun_home  # the controller's (provider_adapters/user_files.py)

    folder = dataset.expanduser().resolve()
    if not folder.is_dir():
        raise UserInputError(f"{dataset}: not a folder; give the dataset folder (with 10_name/ sub-folders)")
    problems = caption_problems("only", model, trigger, where="--model")
    if problems:
        raise UserInputError(
            problems[0].replace("--model.caption_model", "--model").replace("--model.caption_trigger", "--trigger")
        )
    jobs = lorarun_home() / "caption-jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    name = f"caption-{folder.name}"
    job = {
        "name": name,
        "model": {"base": "builtin:tiny-sd15"},  # never loaded: a caption job trains nothing
        "dataset": {
            "path": str(folder),
            "captions": "only",
            "caption_model": model,
            "caption_trigger": trigger,
            "caption_overwrite": overwrite,
        },
        "training": {"epochs": 1, "batch_size": 1},
        "sample": {"prompts": [], "grid_strengths": [], "grid_seeds": []},
        "output": {"dir": str(jobs / f"{name}-out"), "name": "captions"},
    }
    if provider:
        job["resources"] = {"provider": provider}
    path = jobs / f"{name}.yaml"
    import yaml  # here: `lorarun --help` imports this module to list the command

    path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    submit(
        jobs=[path],
        provider=provider,
        yes=yes,
        out=None,
        # The caption job's folder under the lorarun home is lorarun's own: each run replaces the last one's report
        # (the claim still keeps two caption runs of one folder apart, #24).
        overwrite=True,
        max_cost=max_cost,
        keep=False,
        lease_seconds=None,
        hard_lease_minutes=None,
        grace_seconds=900.0,
        rentals=None,
    )
