"""write_report: report.json facts, a readable report.md, and a self-contained report.html with an SVG loss curve."""

from __future__ import annotations

import json
import re

from lorarun.runner.run.report import downsample, fmt_duration, fmt_money, loss_points, write_report


def events(n_steps: int = 40) -> list[dict]:
    ev = [{"t": 0.0, "event": "agent_started", "pid": 1}, {"t": 1.0, "event": "started", "total_steps": n_steps}]
    for step in range(1, n_steps + 1):
        ev.append(
            {
                "t": 1.0 + step,
                "event": "step",
                "step": step,
                "total_steps": n_steps,
                "epoch": 1 + step // 20,
                "loss": 1.0 / step,
                "lr": 1e-4,
                "it_s": 2.5,
            }
        )
    ev += [
        {"t": 50.0, "event": "checkpoint", "path": "lora-000001.safetensors", "sha256": "ab" * 32, "size": 2048},
        {"t": 51.0, "event": "grid", "path": "samples/grid-000040.png", "sha256": "cd" * 32, "size": 999},
        {"t": 52.0, "event": "warning", "message": "caption missing for 1 image <img>"},
        {"t": 53.0, "event": "finished"},
        {"t": 54.0, "event": "engine_exited", "exit_code": 0, "outcome": "finished"},
    ]
    return ev


SUMMARY = {
    "job_id": "demo-1a2b3c",
    "name": "demo",
    "provider": "vastai",
    "instance_id": "8000001",
    "gpu": "1x RTX 4090",
    "price_per_hour": 0.35,
    "timings": {
        "provision": 12.0,
        "upload": 3.5,
        "training": 754.0,
        "upload_bytes": 2_500_000,
        "seconds_per_step": 0.41,
    },
    "predicted_cost": 0.10,
    "actual_cost": 0.12,
    "outcome": "finished",
    "stop_reason": None,
    "verification": {
        "files": [
            {
                "path": "demo.safetensors",
                "kind": "final",
                "size": 4096,
                "sha256": "ef" * 32,
                "error": None,
                "safetensors": {"tensors": 264, "network_dim": "32", "network_alpha": "16", "metadata_keys": 20},
            },
            {
                "path": "samples/grid-000040.png",
                "kind": "grid",
                "size": 999,
                "sha256": "cd" * 32,
                "error": "sha256 mismatch: file 1234…, manifest cdcd…",
                "safetensors": None,
            },
        ]
    },
}


def test_report_json_has_the_facts(tmp_path):
    json_path, md_path, html_path = write_report(tmp_path, SUMMARY, events())
    assert (json_path.name, md_path.name, html_path.name) == ("report.json", "report.md", "report.html")
    r = json.loads(json_path.read_text())
    assert (r["job_id"], r["provider"], r["gpu"], r["price_per_hour"]) == ("demo-1a2b3c", "vastai", "1x RTX 4090", 0.35)
    assert r["cost"]["predicted"] == 0.10 and r["cost"]["actual"] == 0.12
    assert abs(r["cost"]["difference_fraction"] - 0.2) < 1e-9
    assert r["timings"]["training"] == 754.0
    assert "upload_bytes" not in r["timings"] and r["transfer"] == {"upload_bytes": 2_500_000}
    t = r["training"]
    assert (t["steps"], t["total_steps"], t["epochs"], t["engine_outcome"]) == (40, 40, 3, "finished")
    assert t["final_loss"] == 1.0 / 40
    assert t["final_loss_mean_last_10pct"] == sum(1.0 / s for s in (37, 38, 39, 40)) / 4
    assert [f["path"] for f in r["files"]] == ["demo.safetensors", "samples/grid-000040.png"]
    assert r["files"][0]["sha256"] == "ef" * 32 and r["files"][0]["network_dim"] == "32"
    assert r["verified"] is False  # one file failed verification
    assert r["grid"] == "samples/grid-000040.png"


def test_markdown_is_short_and_flags_problems(tmp_path):
    _, md_path, _ = write_report(tmp_path, SUMMARY, events())
    md = md_path.read_text()
    assert md.startswith("# LoRA job demo-1a2b3c — demo")
    assert "| Cost | $0.12 actual, $0.10 predicted (+20%) |" in md
    assert "| training | 12 min 34 s |" in md
    # Sizes and rates are not timings (#12.7): upload_bytes is a fact of its own, s/step beside the steps.
    assert "| Uploaded | 2.4 MB |" in md and "upload_bytes" not in md and "| seconds_per_step" not in md
    assert "0.410 s/step" in md
    assert "264 tensors, dim 32, alpha 16" in md
    assert "ERROR: sha256 mismatch" in md
    assert "![sample grid](samples/grid-000040.png)" in md
    assert len(md.splitlines()) < 60


def test_html_is_self_contained_with_svg_loss_curve_and_grid(tmp_path):
    _, _, html_path = write_report(tmp_path, SUMMARY, events())
    page = html_path.read_text()
    assert "<svg" in page and "<polyline" in page
    points = re.search(r'<polyline[^>]*points="([^"]+)"', page).group(1).split()
    assert len(points) == 40
    ys = [float(p.split(",")[1]) for p in points]
    assert ys == sorted(ys)  # loss falls, so y (downwards in SVG) grows
    assert '<img src="samples/grid-000040.png"' in page
    assert "caption missing for 1 image &lt;img&gt;" in page  # escaped, not markup
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    assert "<script" not in page


def test_without_verification_files_come_from_events_and_verified_is_unknown(tmp_path):
    summary = {k: v for k, v in SUMMARY.items() if k != "verification"}
    r = json.loads(write_report(tmp_path, summary, events())[0].read_text())
    assert {f["path"]: f["kind"] for f in r["files"]} == {
        "lora-000001.safetensors": "checkpoint",
        "samples/grid-000040.png": "grid",
    }
    assert r["verified"] is None


def test_empty_run_still_writes_a_report(tmp_path):
    paths = write_report(tmp_path / "out", {"job_id": "x", "outcome": "failed"}, [{"event": "failed"}])
    r = json.loads(paths[0].read_text())
    assert r["training"]["final_loss"] is None and r["files"] == [] and r["grid"] is None
    assert "Not enough steps for a loss curve" in paths[2].read_text()
    assert "| Outcome | failed |" in paths[1].read_text()


def test_loss_points_skip_non_finite_and_keep_last_of_repeated_steps():
    ev = [
        {"event": "step", "step": 1, "loss": 0.9},
        {"event": "step", "step": 2, "loss": float("nan")},
        {"event": "step", "step": 1, "loss": 0.8},
        {"event": "step", "step": 3, "loss": "bad"},
        {"event": "step", "step": 4, "loss": 0.5},
    ]
    assert [(p.step, p.loss) for p in loss_points(ev)] == [(1, 0.8), (4, 0.5)]


def test_downsample_keeps_the_last_step_and_bucket_means():
    pts = loss_points([{"event": "step", "step": s, "loss": float(s % 2)} for s in range(1, 1001)])
    small = downsample(pts, limit=100)
    assert len(small) == 100 and small[-1].step == 1000
    assert all(p.loss == 0.5 for p in small)  # alternating 0/1 averages out instead of aliasing


def test_fmt_money_keeps_fractions_of_a_cent_visible():
    assert [fmt_money(x) for x in (None, 0, 0.0012, 0.12, 12.5)] == ["–", "$0.00", "$0.0012", "$0.12", "$12.50"]


def test_fmt_duration():
    assert [fmt_duration(s) for s in (3.21, 65, 3725)] == ["3.2 s", "1 min 05 s", "1 h 02 min"]
