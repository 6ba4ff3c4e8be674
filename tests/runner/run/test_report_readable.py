"""Issue 23.9, report side: a loss chart with axis titles, round ticks printed alike and a point per step; the
time split into load, caching, training steps, sampling and saving; the settings that matter and how to load the
LoRA, read from the file that came home."""

from __future__ import annotations

import json
import re

import pytest
from safetensors.numpy import save_file

from lorarun.runner.run.engine_phases import engine_phases
from lorarun.runner.run.loss_chart import LossPoint, loss_svg, nice_ticks
from lorarun.runner.run.report import loss_points, write_report


def step_events(total: int = 82, reports=(1, 20, 41, 62, 82)) -> list[dict]:
    """What a time-based engine sends for an 82-step run: five reports, each with the losses since the last."""
    out, previous = [], 0
    for step in reports:
        losses = [round(0.2 - 0.001 * s, 6) for s in range(previous + 1, step + 1)]
        out.append(
            {
                "t": 100.0 + step,
                "event": "step",
                "step": step,
                "total_steps": total,
                "loss": sum(losses) / len(losses),
                "losses": losses,
            }
        )
        previous = step
    return out


def test_every_trained_step_is_charted_not_only_the_reports():
    points = loss_points(step_events())
    assert [p.step for p in points] == list(range(1, 83))
    assert points[0].loss == pytest.approx(0.199) and points[-1].loss == pytest.approx(0.118)


def test_an_older_engine_without_per_step_losses_still_charts_its_reports():
    events = [{"event": "step", "step": s, "loss": 1.0 / s} for s in (1, 5, 9)]
    assert [p.step for p in loss_points(events)] == [1, 5, 9]


def test_the_chart_has_axis_titles_round_ticks_printed_alike_and_a_dot_per_step():
    svg = loss_svg(loss_points(step_events()))
    assert "optimizer step" in svg and "training loss" in svg
    labels = re.findall(r'text-anchor="end">([^<]+)</text>', svg)  # the loss axis
    assert len(labels) >= 3 and len({len(label.split(".")[-1]) for label in labels}) == 1  # same decimals
    assert len(re.findall(r"<circle ", svg)) == 82


@pytest.mark.parametrize(
    "lo, hi, ticks, decimals",
    [
        (0.05, 0.21, [0.05, 0.1, 0.15, 0.2], 2),
        (0.0312, 0.0498, [0.035, 0.04, 0.045], 3),
        (0.0, 1.0, [0.0, 0.25, 0.5, 0.75, 1.0], 2),
    ],
)
def test_nice_ticks(lo, hi, ticks, decimals):
    got, places = nice_ticks(lo, hi)
    assert got == pytest.approx(ticks) and places == decimals
    assert [f"{t:.{places}f}" for t in got][0].count(".") == (1 if places else 0)


def test_step_ticks_are_whole_numbers():
    ticks, places = nice_ticks(1, 82, integer=True)
    assert places == 0 and all(float(t).is_integer() for t in ticks)
    svg = loss_svg([LossPoint(s, 1.0 / s) for s in range(1, 83)])
    assert "25</text>" in svg and "25.0<" not in svg


def phase_events() -> list[dict]:
    return [
        {"t": 0.0, "event": "started", "total_steps": 4},
        {"t": 30.0, "event": "caching", "what": "latents"},
        {"t": 30.0, "event": "progress", "phase": "caching_latents", "done": 0, "total": 4},
        {"t": 40.0, "event": "progress", "phase": "caching_latents", "done": 4, "total": 4},
        {"t": 45.0, "event": "step", "step": 2, "loss": 0.1},
        {"t": 46.0, "event": "checkpoint", "path": "l-000001.safetensors", "save_seconds": 1.0},
        {"t": 46.0, "event": "progress", "phase": "sampling", "done": 0, "total": 1},
        {"t": 49.0, "event": "progress", "phase": "sampling", "done": 1, "total": 1},
        {"t": 55.0, "event": "step", "step": 4, "loss": 0.1},
        {"t": 57.0, "event": "checkpoint", "path": "l.safetensors", "save_seconds": 2.0},
        {"t": 57.0, "event": "progress", "phase": "sampling_grid", "done": 0, "total": 2},
        {"t": 63.0, "event": "progress", "phase": "sampling_grid", "done": 2, "total": 2},
        {"t": 63.5, "event": "finished"},
    ]


def test_the_engine_time_is_split_into_load_caching_steps_sampling_and_saving():
    phases = engine_phases(phase_events())
    assert phases == pytest.approx(
        {"load": 30.0, "caching": 10.0, "training steps": 55 - 40 - 3 - 1, "sampling": 9.0, "saving": 3.0}
    )


def test_the_report_shows_the_phases_the_settings_and_how_to_load_the_lora(tmp_path):
    import numpy as np

    metadata = {
        "ss_network_dim": "32",
        "ss_network_alpha": "16",
        "ss_unet_lr": "0.0001",
        "ss_text_encoder_lr": "5e-05",
        "ss_lr_scheduler": "cosine_with_restarts",
        "ss_lr_warmup_steps": "4",
        "ss_optimizer": "AdamW8bit",
        "ss_steps": "82",
        "ss_max_train_steps": "82",
        "ss_num_epochs": "2",
        "ss_batch_size_per_device": "1",
        "ss_resolution": "(512, 512)",
        "ss_mixed_precision": "bf16",
        "ss_seed": "42",
    }
    save_file(
        {"lora_unet_x.lora_down.weight": np.zeros((4, 4), np.float32)},
        str(tmp_path / "mychar.safetensors"),
        metadata=metadata,
    )
    events = [
        {"t": 0.0, "event": "started", "family": "sd15", "base": "runwayml/stable-diffusion-v1-5"},
        *phase_events()[1:],
        *step_events(),
    ]
    summary = {
        "job_id": "mychar-1",
        "name": "mychar",
        "provider": "vastai",
        "outcome": "finished",
        "verification": {"files": [{"path": "mychar.safetensors", "kind": "final", "size": 100, "sha256": "ab" * 32}]},
    }
    write_report(tmp_path, summary, events)
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["engine_timings"]) == {"load", "caching", "training steps", "sampling", "saving"}
    settings = dict(report["guide"]["settings"])
    assert settings["network"] == "LoRA dim 32, alpha 16" and settings["optimizer"] == "AdamW8bit"
    assert "cosine_with_restarts, warm-up 4" in settings["schedule"]
    html = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    for text in (html, md):
        assert "Inside training" in text and "training steps" in text
        assert "models/loras" in text and "models/Lora" in text
        assert "&lt;lora:mychar:0.8&gt;" in text or "<lora:mychar:0.8>" in text
        assert "load_lora_weights" in text and "StableDiffusionPipeline" in text
