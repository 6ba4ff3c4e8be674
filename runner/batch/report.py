"""`batch.html`: the batch side by side — every job's settings (the fields that differ highlighted), the loss
curves on one chart, the sample grids one under another (the sweep keeps the base's prompts and seeds, so rows
compare), cost and time per job, and the files. One self-contained file beside the batch record; images are
linked by absolute file URIs (they stay in each job's output folder)."""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path
from typing import Any

from lorarun.runner.batch.record import BatchRecord, BatchStore
from lorarun.runner.batch.table import job_spent
from lorarun.runner.run.report import LossPoint, downsample, fmt_duration, fmt_money, loss_points
from lorarun.runner.run.report_files import find_report

COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#854d0e")
SETTING_SECTIONS = ("model", "dataset", "training", "sample", "flux")
_CSS = """body{font:15px/1.5 system-ui,sans-serif;margin:2em auto;padding:0 1em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.2em .7em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{font-weight:600}.differs{background:#fef3c7;font-weight:600}
.muted{color:#777}.bad{color:#b91c1c}svg text{font:11px system-ui,sans-serif;fill:#555}
.grid img{max-width:100%;display:block;margin:.3em 0 1.2em}.swatch{display:inline-block;width:1em;height:.6em}"""


def job_settings(job_file: str) -> dict[str, str]:
    """The job's settings as `section.field: value` (what the sweep may change), empty if the file is gone."""
    from lorarun.runner.errors import InvalidJob
    from lorarun.runner.job.load import load_job

    try:
        spec = load_job(Path(job_file))
    except InvalidJob as exc:  # a file that went bad since: what did parse still describes the job
        spec = exc.spec
    except Exception:
        return {}
    if spec is None:
        return {}
    flat: dict[str, str] = {}
    for section in SETTING_SECTIONS:
        value = getattr(spec, section, None)
        if value is None or not dataclasses.is_dataclass(value) or isinstance(value, type):
            continue
        for key, item in dataclasses.asdict(value).items():
            flat[f"{section}.{key}"] = json.dumps(item, default=str) if isinstance(item, (list, dict)) else str(item)
    return flat


def _events(batches: BatchStore, job_id: str) -> list[dict]:
    path = batches.jobs.job_dir(job_id) / "events.jsonl"
    out = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


def collect(record: BatchRecord, batches: BatchStore) -> list[dict[str, Any]]:
    """One plain dict per job: name, state, settings, loss points, grid (absolute path or None), files, report."""
    rows = []
    for job in record.jobs:
        state = batches.jobs.load(job.job_id)
        out = Path(state.output_dir)
        events = _events(batches, job.job_id)
        grids = [str(e["path"]) for e in events if e.get("event") == "grid" and e.get("path")]
        grid = out / grids[-1] if grids and (out / grids[-1]).is_file() else None
        report = find_report(out, job.job_id)[1]  # report.json, or <name>.report.json in a shared folder
        history = dict(state.history)
        rows.append(
            {
                "name": job.name,
                "rental": job.rental,
                "attempts": len(job.attempts),
                "state": state,
                "settings": job_settings(job.job_file),
                "points": loss_points(events),
                "grid": grid,
                "files": sorted(p.name for p in out.glob("*.safetensors")) if out.is_dir() else [],
                "output_dir": out,
                "cost": (report.get("cost") or {}).get("actual") if report else None,
                "spent": job_spent(state),
                "seconds": (state.updated_at - history["provision"]) if "provision" in history else None,
            }
        )
    return rows


def differing(rows: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for r in rows for k in r["settings"]})
    return [k for k in keys if len({r["settings"].get(k) for r in rows}) > 1]


def loss_chart(series: list[tuple[str, list[LossPoint]]], width: int = 900, height: int = 300) -> str:
    """Every job's loss curve on one SVG, one colour each, the legend below the chart."""
    drawn = [(name, downsample(points)) for name, points in series if len(points) >= 2]
    if not drawn:
        return '<p class="muted">Not enough steps for loss curves.</p>'
    left, right, top, bottom = 56, 12, 12, 28
    x0 = min(p.step for _, pts in drawn for p in pts)
    x1 = max(p.step for _, pts in drawn for p in pts)
    lo = min(p.loss for _, pts in drawn for p in pts)
    hi = max(p.loss for _, pts in drawn for p in pts)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(step: float) -> float:
        return left + (step - x0) / max(1, x1 - x0) * plot_w

    def y(loss: float) -> float:
        return top + (hi - loss) / (hi - lo) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="training loss by step, every job">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>',
    ]
    for i in range(5):
        value = lo + (hi - lo) * i / 4
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.3g}</text>')
        step = x0 + (x1 - x0) * i / 4
        parts.append(f'<text x="{x(step):.1f}" y="{height - 8}" text-anchor="middle">{round(step)}</text>')
    legend = []
    for n, (name, pts) in enumerate(drawn):
        colour = COLOURS[n % len(COLOURS)]
        path = " ".join(f"{x(p.step):.1f},{y(p.loss):.1f}" for p in pts)
        parts.append(
            f'<polyline class="loss" data-job="{html.escape(name)}" fill="none" stroke="{colour}" '
            f'stroke-width="1.5" points="{path}"/>'
        )
        legend.append(f'<span class="swatch" style="background:{colour}"></span> {html.escape(name)}')
    parts.append("</svg>")
    return "".join(parts) + "<p>" + " &nbsp; ".join(legend) + "</p>"


def render(record: BatchRecord, rows: list[dict[str, Any]]) -> str:
    e = html.escape
    differs = differing(rows)
    out = [
        f'<!doctype html><html><head><meta charset="utf-8"><title>batch {e(record.batch_id)}</title>'
        f"<style>{_CSS}</style></head><body><h1>Batch {e(record.batch_id)}</h1>"
        f"<p>{len(rows)} jobs on {record.rentals} rental(s) at {e(record.provider)}"
        + (f", from sweep <code>{e(record.sweep)}</code>" if record.sweep else "")
        + '</p><h2>Jobs</h2><table id="jobs"><tr><th>job</th><th>rental</th><th>outcome</th><th>time</th>'
        "<th>cost</th><th>files</th></tr>"
    ]
    for r in rows:
        state = r["state"]
        cost = r["cost"] if r["cost"] is not None else r["spent"]
        files = (
            "<br>".join(f'<a href="{e((r["output_dir"] / f).as_uri())}">{e(f)}</a>' for f in r["files"])
            or '<span class="muted">none</span>'
        )
        cls = "" if state.phase in ("done", "stopped") else ' class="bad"'
        moved = f" (moved, try {r['attempts']})" if r["attempts"] > 1 else ""
        out.append(
            f"<tr><td>{e(r['name'])}</td><td>{r['rental']}{e(moved)}</td><td{cls}>{e(state.phase)}: "
            f"{e(state.message[:160])}</td><td>{e(fmt_duration(r['seconds']) if r['seconds'] else '-')}</td>"
            f"<td>{e(fmt_money(cost))}</td><td>{files}</td></tr>"
        )
    out.append("</table><h2>Settings</h2>")
    if differs:
        out.append(f"<p>{len(differs)} setting(s) differ between the jobs (highlighted); the rest are the same.</p>")
    out.append(
        '<table id="settings"><tr><th>setting</th>' + "".join(f"<th>{e(r['name'])}</th>" for r in rows) + "</tr>"
    )
    keys = differs + [k for k in sorted({k for r in rows for k in r["settings"]}) if k not in differs]
    for key in keys:
        cls = ' class="differs"' if key in differs else ""
        out.append(
            f"<tr{cls}><td>{e(key)}</td>"
            + "".join(f"<td>{e(r['settings'].get(key, '-'))}</td>" for r in rows)
            + "</tr>"
        )
    out.append("</table><h2>Loss</h2>" + loss_chart([(r["name"], r["points"]) for r in rows]))
    out.append('<h2>Samples</h2><p>Same prompts and seeds for every job, one grid under another.</p><div class="grid">')
    for r in rows:
        out.append(f"<h3>{e(r['name'])}</h3>")
        if r["grid"] is not None:
            # data-loaded: set by the browser once the image decoded (the headless check in the tests reads it).
            out.append(
                f'<img class="sample-grid" data-job="{e(r["name"])}" src="{e(r["grid"].as_uri())}" '
                f'alt="samples of {e(r["name"])}" onload="this.dataset.loaded=\'yes\'">'
            )
        else:
            out.append('<p class="muted">no sample grid (no prompts, or the job ended before sampling)</p>')
    out.append("</div></body></html>\n")
    return "".join(out)


def write_batch_report(record: BatchRecord, batches: BatchStore) -> Path:
    path = batches.dir / f"{record.batch_id}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(record, collect(record, batches)), encoding="utf-8")
    batches.set_report(record.batch_id, path)
    return path
