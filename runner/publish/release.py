"""Publishing a finished job: from `lorarun publish JOB`, or by itself after `submit` when the job names
`output.hub`. Only a job whose outputs came home verified is published (after `submit`: a finished one; asked
for, a stopped one too); the record of what went where is the job's `hub.json` (repo, URL, commit, files; never the
token)."""

from __future__ import annotations

import json
from pathlib import Path

from lorarun.runner.console import err_console
from lorarun.runner.errors import LorarunError, UserInputError
from lorarun.runner.publish.hub import PublishResult, publish
from lorarun.runner.publish.model_card import build_release


def publish_job(
    spec, output_dir: Path, job_id: str, job_dir: Path, *, repo_id: str | None = None, private: bool | None = None
) -> PublishResult:
    repo = repo_id or spec.output.hub
    if not repo:
        raise UserInputError(f"{spec.source}: no Hub repo to publish to: set output.hub (user/name) or pass --repo")
    lora = output_dir / f"{spec.output.name}.safetensors"
    if not lora.is_file():
        raise UserInputError(f"{lora}: the finished LoRA is not there; only a job whose outputs came home publishes")
    try:
        release = build_release(spec, output_dir, repo, staging=job_dir / "hub")
    except (OSError, ValueError) as exc:  # safetensors raises SafetensorError (a ValueError-like) on a bad header
        raise UserInputError(f"{lora}: not a readable LoRA file ({exc}); it cannot be published") from None
    private = spec.output.hub_private if private is None else private
    result = publish(repo, list(release.files), private=private, message=f"lorarun: {spec.name} (job {job_id})")
    record = {
        "repo_id": result.repo_id,
        "url": result.url,
        "commit_url": result.commit_url,
        "files": list(result.files),
        "private": private,
        "trigger_words": list(release.trigger_words),
    }
    (job_dir / "hub.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return result


def publish_finished(runs, store, notify) -> None:
    """After teardown: each job that finished and names `output.hub` is published. A failure here never undoes
    the job (the LoRA is home): it is said in one line with the command that retries."""
    for run in runs:
        spec = run.job.spec
        if run.outcome != "finished" or not spec.output.hub:
            continue
        try:
            result = publish_job(spec, spec.output_dir, run.state.job_id, store.job_dir(run.state.job_id))
        except LorarunError as exc:
            err_console.print(
                f"[yellow]{run.state.name}: the LoRA is home, but publishing to {spec.output.hub} failed: {exc}; "
                f"retry with `lorarun publish {run.state.job_id}`[/]",
                highlight=False,
            )
            continue
        err_console.print(f"published {run.state.name} to {result.url}", highlight=False)
        notify.hub_published(run, result.url)
