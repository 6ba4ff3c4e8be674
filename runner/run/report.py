"""The job report, written next to the LoRA: `report.json` for tools, `report.md` and `report.html` for people.

Built from what the controller knows (`job_summary`: provider, GPU, price, timings, costs, verification) and the
engine's events (steps, losses, checkpoints, samples). The HTML is self-contained: inline CSS, the loss curve as
inline SVG (no matplotlib on the laptop), and the sample grid by relative link, since it sits in the same folder.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lorarun.runner.run.engine_phases import PHASES, engine_phases
from lorarun.runner.run.job_end import last_checkpoint, machine_time_label, progress_line
from lorarun.runner.run.loss_chart import MAX_CURVE_POINTS, LossPoint, downsample, loss_svg  # noqa: F401 (re-exported)
from lorarun.runner.run.report_files import find_report, html_beside, report_paths
from lorarun.runner.run.report_guide import guide_html, guide_markdown, training_guide

REPORT_JSON, REPORT_MD, REPORT_HTML = "report.json", "report.md", "report.html"
OUTPUT_EVENTS = ("checkpoint", "sample", "grid")


# -- facts -------------------------------------------------------------------------------------------------------------
def loss_points(events: Iterable[Mapping[str, Any]]) -> list[LossPoint]:
    """(step, loss) of every step trained, in step order (a resumed run repeats steps: last wins). A step event
    carries `losses`, each step's loss since the previous report (image/engine/step_losses.py); an older engine's
    event only its mean, charted at its own step."""
    by_step: dict[int, float] = {}
    for e in events:
        if e.get("event") != "step":
            continue
        try:
            step, loss = int(e["step"]), float(e["loss"])
        except (KeyError, TypeError, ValueError):
            continue
        losses = e.get("losses")
        if isinstance(losses, list) and losses:
            for i, value in enumerate(losses):
                if isinstance(value, (int, float)) and math.isfinite(value):
                    by_step[step - len(losses) + 1 + i] = float(value)
        elif math.isfinite(loss):
            by_step[step] = loss
    return [LossPoint(s, by_step[s]) for s in sorted(by_step)]


def _training(events: Sequence[Mapping[str, Any]], points: Sequence[LossPoint]) -> dict[str, Any]:
    steps = [e for e in events if e.get("event") == "step"]
    last = steps[-1] if steps else {}
    tail = points[-max(1, len(points) // 10) :] if points else []
    terminal = next((e for e in reversed(events) if e.get("event") in ("finished", "failed", "stopped")), None)
    return {
        "steps": last.get("step"),
        "total_steps": last.get("total_steps")
        or next((e.get("total_steps") for e in events if e.get("event") == "started"), None),
        "epochs": max(
            (e["epoch"] for e in events if e.get("event") in ("epoch", "step") and isinstance(e.get("epoch"), int)),
            default=None,
        ),
        "final_loss": points[-1].loss if points else None,
        # The last step's loss is one noisy sample; the mean of the last tenth says more.
        "final_loss_mean_last_10pct": sum(p.loss for p in tail) / len(tail) if tail else None,
        "it_s": last.get("it_s"),
        "engine_outcome": terminal.get("event") if terminal else None,
        "warnings": [str(e.get("message", "")) for e in events if e.get("event") == "warning"],
    }


def _files(summary: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Verified files when the controller verified them; otherwise what the engine announced in its events."""
    verified = (summary.get("verification") or {}).get("files")
    if verified:
        rows = []
        for f in verified:
            st = f.get("safetensors") or {}
            rows.append(
                {
                    "path": f.get("path"),
                    "kind": f.get("kind"),
                    "size": f.get("size"),
                    "sha256": f.get("sha256"),
                    "ok": f.get("error") is None,
                    "error": f.get("error"),
                    "tensors": st.get("tensors"),
                    "network_dim": st.get("network_dim"),
                    "network_alpha": st.get("network_alpha"),
                }
            )
        return rows
    latest: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("event") in OUTPUT_EVENTS and e.get("path"):
            latest[str(e["path"])] = {
                "path": e["path"],
                "kind": e["event"],
                "size": e.get("size"),
                "sha256": e.get("sha256"),
                "ok": None,
                "error": None,
            }
    return list(latest.values())


def _grid(events: Sequence[Mapping[str, Any]]) -> str | None:
    grids = [str(e["path"]) for e in events if e.get("event") == "grid" and e.get("path")]
    return grids[-1] if grids else None


def _cost(summary: Mapping[str, Any]) -> dict[str, Any]:
    predicted, actual = summary.get("predicted_cost"), summary.get("actual_cost")
    diff = None
    if isinstance(predicted, (int, float)) and isinstance(actual, (int, float)) and predicted > 0:
        diff = (actual - predicted) / predicted
    return {"predicted": predicted, "actual": actual, "difference_fraction": diff}


def build_report(
    job_summary: Mapping[str, Any], events: Sequence[Mapping[str, Any]], output_dir: Path | None = None
) -> dict[str, Any]:
    """report.json's content: plain JSON values only."""
    points = loss_points(events)
    files = _files(job_summary, events)
    return {
        "engine_timings": engine_phases(events),  # load, caching, training steps, sampling, saving
        "guide": training_guide(output_dir, files, events) if output_dir is not None else None,
        "job_id": job_summary.get("job_id"),
        "name": job_summary.get("name"),
        "output_name": job_summary.get("output_name"),  # the LoRA this report is about (report_files.py)
        "outcome": job_summary.get("outcome"),
        "stop_reason": job_summary.get("stop_reason") or None,
        "provider": job_summary.get("provider"),
        "instance_id": job_summary.get("instance_id"),
        "gpu": job_summary.get("gpu"),
        "price_per_hour": job_summary.get("price_per_hour"),
        "cost": _cost(job_summary),  # across every rental of the job (interruptible: several)
        "interruptions": list(job_summary.get("interruptions") or []),
        # Durations only; sizes and rates (upload_bytes, seconds_per_step) are quantities of their own.
        "timings": {
            k: v
            for k, v in (job_summary.get("timings") or {}).items()
            if isinstance(v, (int, float)) and not k.endswith("_bytes") and k != "seconds_per_step"
        },
        "transfer": {
            k: v
            for k, v in (job_summary.get("timings") or {}).items()
            if isinstance(v, (int, float)) and k.endswith("_bytes")
        },
        "seconds_per_step": (job_summary.get("timings") or {}).get("seconds_per_step"),
        "training": _training(events, points),
        "files": files,
        "verified": all(f["ok"] for f in files) if files and all(f["ok"] is not None for f in files) else None,
        "grid": _grid(events),
        "generated": time.time(),
    }


# -- formatting --------------------------------------------------------------------------------------------------------
def fmt_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def fmt_money(x: Any) -> str:
    if not isinstance(x, (int, float)):
        return "–"
    # A CPU demo or a short test run costs fractions of a cent: "$0.00" would hide the comparison.
    return f"${x:.2f}" if x == 0 or abs(x) >= 0.1 else f"${x:.4f}"


def fmt_timing(name: str, value: float) -> str:
    if name.endswith("_bytes"):
        return fmt_bytes(value)
    if name == "seconds_per_step":
        return f"{value:.3f} s/step"
    return fmt_duration(value)


TRANSFER_LABELS = {"upload_bytes": "Uploaded", "download_bytes": "Downloaded"}


def _facts(r: Mapping[str, Any]) -> list[tuple[str, str]]:
    t, c = r["training"], r["cost"]
    diff = c["difference_fraction"]
    loss = t["final_loss"]
    return [
        (
            "Outcome",
            str(r["outcome"] or t["engine_outcome"] or "unknown")
            + (f" ({r['stop_reason']})" if r["stop_reason"] else ""),
        ),
        ("Provider", f"{r['provider'] or '–'}" + (f", instance {r['instance_id']}" if r["instance_id"] else "")),
        ("GPU", f"{r['gpu'] or '–'} at {fmt_money(r['price_per_hour'])}/h"),
        (
            "Cost",
            f"{fmt_money(c['actual'])} actual, {fmt_money(c['predicted'])} predicted"
            + (f" ({diff:+.0%})" if diff is not None else ""),
        ),
        (
            "Steps",
            f"{t['steps'] if t['steps'] is not None else '–'} of {t['total_steps'] or '–'}"
            + (f", {r['seconds_per_step']:.3f} s/step" if isinstance(r.get("seconds_per_step"), (int, float)) else ""),
        ),
        *[(TRANSFER_LABELS.get(name, name), fmt_bytes(value)) for name, value in (r.get("transfer") or {}).items()],
        (
            "Final loss",
            "–" if loss is None else f"{loss:.4f} (mean of the last tenth {t['final_loss_mean_last_10pct']:.4f})",
        ),
        (
            "Verified",
            {
                True: "every file matches its sha256 and loads",
                False: "PROBLEMS, see the files table",
                None: "not verified",
            }[r["verified"]],
        ),
    ]


def _file_note(f: Mapping[str, Any]) -> str:
    if f.get("error"):
        return f"ERROR: {f['error']}"
    if f.get("tensors") is not None:
        return f"{f['tensors']} tensors, dim {f.get('network_dim') or '?'}, alpha {f.get('network_alpha') or '?'}"
    return ""


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _engine_rows(r: Mapping[str, Any]) -> list[tuple[str, float]]:
    timings = r.get("engine_timings") or {}
    return [(name, timings[name]) for name in PHASES if name in timings]


def render_markdown(r: Mapping[str, Any]) -> str:
    lines = [f"# LoRA job {r['job_id'] or ''}" + (f" — {r['name']}" if r["name"] else ""), "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_md_cell(v)} |" for k, v in _facts(r)]
    if r["timings"]:
        lines += ["", "## Timings", "", "| phase | value |", "|---|---|"]
        lines += [f"| {k} | {fmt_timing(k, v)} |" for k, v in r["timings"].items()]
    if r.get("engine_timings"):
        lines += ["", "## Inside training", "", "| phase | time |", "|---|---|"]
        lines += [f"| {k} | {fmt_duration(v)} |" for k, v in _engine_rows(r)]
    lines += guide_markdown(r.get("guide"))
    if r["files"]:
        lines += ["", "## Files", "", "| file | kind | size | sha256 | notes |", "|---|---|---|---|---|"]
        lines += [
            f"| {_md_cell(f['path'])} | {f['kind'] or ''} | {fmt_bytes(f['size'])} | "
            f"`{(f['sha256'] or '')[:16]}` | {_md_cell(_file_note(f))} |"
            for f in r["files"]
        ]
    if r["training"]["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in r["training"]["warnings"]]
    if r["grid"]:
        lines += ["", "## Samples", "", f"![sample grid]({r['grid']})"]
    return "\n".join(lines) + "\n"


_CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:760px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}
th{font-weight:600}code{font-size:13px}.bad{color:#b91c1c;font-weight:600}.muted{color:#777}
svg text{font:11px system-ui,sans-serif;fill:#555}img{max-width:100%}"""


def render_html(r: Mapping[str, Any], points: Sequence[LossPoint]) -> str:
    e = html.escape
    title = f"LoRA job {r['job_id'] or ''}" + (f" — {r['name']}" if r["name"] else "")
    out = [
        f'<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title><style>{_CSS}</style>'
        f"</head><body><h1>{e(title)}</h1><table>"
    ]
    out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _facts(r)]
    out.append("</table><h2>Loss</h2>" + loss_svg(points))
    if r["timings"]:
        out.append(
            "<h2>Timings</h2><table>"
            + "".join(f"<tr><td>{e(k)}</td><td>{e(fmt_timing(k, v))}</td></tr>" for k, v in r["timings"].items())
            + "</table>"
        )
    if r.get("engine_timings"):
        out.append(
            "<h2>Inside training</h2><table>"
            + "".join(f"<tr><td>{e(k)}</td><td>{e(fmt_duration(v))}</td></tr>" for k, v in _engine_rows(r))
            + "</table>"
        )
    out.append(guide_html(r.get("guide")))
    if r["files"]:
        out.append("<h2>Files</h2><table><tr><th>file</th><th>kind</th><th>size</th><th>sha256</th><th></th></tr>")
        for f in r["files"]:
            note = _file_note(f)
            cls = ' class="bad"' if f.get("error") else ""
            out.append(
                f'<tr><td><a href="{e(str(f["path"]))}">{e(str(f["path"]))}</a></td><td>{e(f["kind"] or "")}'
                f'</td><td>{e(fmt_bytes(f["size"]))}</td><td><code title="{e(f["sha256"] or "")}">'
                f"{e((f['sha256'] or '')[:16])}</code></td><td{cls}>{e(note)}</td></tr>"
            )
        out.append("</table>")
    if r["training"]["warnings"]:
        out.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{e(w)}</li>" for w in r["training"]["warnings"]) + "</ul>")
    if r["grid"]:
        out.append(f'<h2>Samples</h2><img src="{e(r["grid"])}" alt="sample grid">')
    out.append("</body></html>\n")
    return "".join(out)


def write_report(
    output_dir: Path, job_summary: Mapping[str, Any], events: Sequence[Mapping[str, Any]]
) -> tuple[Path, Path, Path]:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(job_summary, events, output_dir)
    # report.*, or <output_name>.report.* when report.* is another LoRA's (two runs in one folder, #24)
    paths = report_paths(output_dir, job_summary.get("job_id"), job_summary.get("output_name"))
    paths[0].write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    paths[1].write_text(render_markdown(report), encoding="utf-8")
    paths[2].write_text(render_html(report, loss_points(events)), encoding="utf-8")
    return paths


def summary_lines(state, output_dir: Path, lora_name: str, now: float | None = None) -> list[str]:
    """What the user reads when a job ends: where the LoRA (or its last checkpoint) and the report are, how far it
    got, wall time, the instance's life (provision → teardown: GPU time the provider bills, or CPU time on this
    machine) and the cost, actual against predicted."""
    now = time.time() if now is None else now
    output_dir = Path(output_dir)
    history = list(getattr(state, "history", ()) or ())
    started = history[0][1] if history else getattr(state, "created_at", now)
    ended = history[-1][1] if history and getattr(state, "is_final", False) else now
    rented = next((t for phase, t in history if phase == "provision"), None)
    released = next(
        (t for phase, t in reversed(history) if phase in ("teardown", "done", "stopped", "failed", "kept")), None
    )
    lines = []
    final = output_dir / f"{lora_name}.safetensors"
    checkpoint = None if final.exists() else last_checkpoint(output_dir, lora_name)
    if final.exists():
        lines.append(f"LoRA    {final}")
    elif checkpoint is not None:
        lines.append(f"LoRA    no final LoRA; last checkpoint home: {checkpoint}")
    else:
        lines.append(f"LoRA    none (outputs so far in {output_dir})")
    progress = progress_line(state) if hasattr(state, "job_id") else None
    if progress:
        lines.append(progress)
    report_json, report = find_report(output_dir, getattr(state, "job_id", None))
    report_html = html_beside(report_json) if report_json is not None else output_dir / REPORT_HTML
    if report_json is not None and report_html.exists():
        lines.append(f"report  {report_html}")
    times = f"time    {fmt_duration(max(0.0, ended - started))} wall"
    if rented is not None and released is not None and released >= rented:
        times += f", {fmt_duration(released - rented)} {machine_time_label(state)}"
    lines.append(times)
    cost = report.get("cost") or {}
    actual, predicted = cost.get("actual"), cost.get("predicted", getattr(state, "predicted_cost", None))
    if isinstance(actual, (int, float)) or isinstance(predicted, (int, float)):
        diff = cost.get("difference_fraction")
        lines.append(
            f"cost    {fmt_money(actual)} actual, {fmt_money(predicted)} predicted"
            + (f" ({diff:+.0%})" if isinstance(diff, (int, float)) else "")
        )
    return lines
