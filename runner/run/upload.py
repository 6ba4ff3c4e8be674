"""Upload: the dataset (exactly what the scan accepted), regularization images, a local model, Flux's files and
the engine config; on a stock image lorarun itself is pip-installed first (runner/run/stock.py). Files already
on the instance are skipped, so a resumed upload is cheap. What left the laptop is listed in upload_manifest.json.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from pathlib import Path

from lorarun.runner.console import err_console
from lorarun.runner.job import flux_files
from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run import fault_messages, stock, stock_watchdog
from lorarun.runner.run.context import JobRun, RunContext, shell_quote
from lorarun.runner.run.progress import transfer_bar
from lorarun.runner.run.shared_dataset import remote_dataset_dir
from lorarun.sshlink.sftp_io import local_files
from lorarun.sshlink.transport import Transport


def upload(ctx: RunContext, run: JobRun, transport: Transport, layout: RemoteLayout) -> None:
    ctx.advance(run, "upload")
    spec = run.job.spec
    started = ctx.clock.now()
    dataset = remote_dataset_dir(run.job, layout, ctx.provider.name)  # one copy per rental for the jobs that share it
    transport.run(f"mkdir -p {shell_quote(layout.output)} {shell_quote(layout.work)}", timeout=60)
    # Exactly what the scan accepted (images and the captions read for them), nothing else in the folder.
    with (
        transfer_bar(f"uploading {spec.dataset_dir.name}") as progress,
        fault_messages.vanished_is_said(spec.dataset_dir, lambda: fault_messages.rented_seconds(ctx)),
    ):
        report_ = transport.put_files(
            local_files((f.rel, f.path) for f in run.job.scan.files()),
            dataset,
            progress=progress,
            what=str(spec.dataset_dir),
        )
    uploaded = {"dataset": report_.manifest}
    reg_dir = None
    if spec.reg_dir:
        with transfer_bar(f"uploading {spec.reg_dir.name}") as progress:
            uploaded["reg"] = transport.put_files(
                local_files((f.rel, f.path) for f in run.job.scan.files(reg=True)),
                layout.reg,
                progress=progress,
                what=str(spec.reg_dir),
            ).manifest
        reg_dir = layout.reg
    write_upload_manifest(ctx.store.job_dir(run.state.job_id), uploaded)
    engine_cfg = spec.engine_config(
        job_id=run.state.job_id, dataset_dir=dataset, reg_dir=reg_dir, output_dir=layout.output, work_dir=layout.work
    )
    base = spec.model.base
    local_model = (
        spec.resolve(base) if base.startswith((".", "/", "~")) or base.endswith((".safetensors", ".ckpt")) else None
    )
    if local_model is not None and local_model.exists():
        if local_model.is_dir():
            with transfer_bar(f"uploading {local_model.name}") as progress:
                transport.put_tree(local_model, layout.path("model", local_model.name), progress=progress)
        else:
            err_console.print(f"uploading {local_model.name} ({local_model.stat().st_size / 1e9:.1f} GB)")
            transport.put_file(local_model, layout.path("model", local_model.name))
        engine_cfg = dataclasses.replace(
            engine_cfg, model=dataclasses.replace(engine_cfg.model, base=layout.path("model", local_model.name))
        )
    engine_cfg = flux_files.upload(
        spec, engine_cfg, transport, layout, lambda line: err_console.print(line, highlight=False)
    )
    job_dir = ctx.store.job_dir(run.state.job_id)
    engine_cfg.write(job_dir / "engine_config.json")
    transport.put_file(job_dir / "engine_config.json", layout.engine_config)
    run.timings["upload"] = ctx.clock.now() - started
    run.timings["upload_bytes"] = float(report_.bytes_sent)
    err_console.print(
        f"uploaded {report_.files_sent} file(s), skipped {report_.files_skipped} already there", highlight=False
    )


def install_lorarun(ctx: RunContext, run: JobRun, transport: Transport, layout: RemoteLayout) -> RemoteLayout:
    """The stock path: lorarun as a wheel beside the dataset, pip-installed on the instance (runner/run/stock.py)."""
    started = ctx.clock.now()
    wheel = stock.build_wheel(ctx.store.job_dir(run.state.job_id) / "wheel")
    remote_wheel = layout.path(wheel.name)
    transport.run(f"mkdir -p {shell_quote(layout.root)}", timeout=60)
    transport.put_file(wheel, remote_wheel)
    err_console.print("installing lorarun on the stock image (pip)", highlight=False)
    # One pip cache per machine, beside the job folders: later jobs of a batch install from it.
    cache = posixpath.join(posixpath.dirname(layout.root), ".pip-cache")
    out = transport.run(stock.install_command(remote_wheel, cache), timeout=1800)
    run.timings["install"] = ctx.clock.now() - started
    python = (out.stdout.strip().splitlines() or [layout.python])[-1]
    installed = dataclasses.replace(layout, python=python)
    # The deadline guard our image starts at boot (#27), with the create call's own variables.
    guard = stock_watchdog.watchdog_env(ctx.primary.state.job_id, ctx.hard_deadline, ctx.provider.self_destruct())
    stock_watchdog.start_watchdog(transport, installed, guard)
    return installed


def write_upload_manifest(job_dir: Path, uploaded: dict) -> None:
    """What left the laptop for this job, file by file (relative path, sha256, size), for the user to audit."""
    data = {
        part: [{"path": rel, "sha256": sha, "size": size} for rel, sha, size in files]
        for part, files in uploaded.items()
    }
    (job_dir / "upload_manifest.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
