"""Small visible things (#12.7): the grid's labels are readable and name the seed and prompt; `logs` shows times as
local clock times; `--version` exists; tables are not cut at 80 columns when output is piped."""

from __future__ import annotations

import subprocess
import sys
import time

from PIL import Image

from lorarun.image.engine.grid import MIN_FONT_PX, compose_grid
from lorarun.runner.cli.app import main
from lorarun.runner.cli.logs import format_event


def _cells(rows: int, cols: int, size: int = 64):
    return [[Image.new("RGB", (size, size), (200, 40 * c, 90 * r)) for c in range(cols)] for r in range(rows)]


def _ink_rows(image: Image.Image, box) -> int:
    """How many pixel rows in `box` hold dark (text) pixels."""
    crop = image.crop(box).convert("L")
    w, h = crop.size
    return sum(1 for y in range(h) if any(crop.getpixel((x, y)) < 100 for x in range(w)))


def test_grid_labels_are_readable_and_name_seed_and_prompt():
    cells = _cells(2, 4)
    grid = compose_grid(cells, [0.0, 0.5, 0.8, 1.0], [1, 2], "lrnshape, a red circle on a white background")
    w, h = grid.size
    assert h > 2 * 64 and w > 4 * 64  # room above for the prompt and strengths, left for the seeds
    left = w - 4 * 64
    header = h - 2 * 64
    # The label text is at least MIN_FONT_PX tall (the old grid used PIL's 11-pixel bitmap font in a 14-pixel band).
    assert _ink_rows(grid, (0, header, left, header + 64)) >= MIN_FONT_PX * 0.6  # "seed 1"
    assert _ink_rows(grid, (left, 0, w, header)) >= 2 * MIN_FONT_PX * 0.6  # prompt line(s) + strengths
    # The cells are pasted unchanged at their places.
    assert grid.getpixel((left + 64 * 3 + 10, header + 64 + 10)) == cells[1][3].getpixel((0, 0))


def test_a_long_prompt_is_wrapped_and_cut_not_drawn_off_the_image():
    grid = compose_grid(_cells(1, 2), [0.0, 1.0], [7], "word " * 200)
    assert grid.size[1] < 64 + 6 * 40  # at most three prompt lines and the labels above the cells


def test_logs_show_times_as_local_clock_times():
    deadline = time.mktime((2031, 11, 29, 14, 3, 7, 0, 0, -1))
    line = format_event({"t": time.time(), "event": "agent_started", "lease_deadline": deadline, "pid": 1234})
    assert "lease_deadline=2031-11-29 14:03" in line and "e+09" not in line and "pid=1234" in line
    today = time.time() + 60
    assert f"lease_deadline={time.strftime('%H:%M:%S', time.localtime(today))}" in format_event(
        {"t": today, "event": "x", "lease_deadline": today}
    )


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("lorarun ")


def test_piped_tables_are_not_cut_at_80_columns(tmp_path):
    """`lorarun status | cat`: no terminal, no COLUMNS; a long job id stays on one line, headers whole."""
    from lorarun.runner.state import JobState, JobStore

    store = JobStore(tmp_path)
    job_id = "a-rather-long-job-name-for-a-table-abc123"
    store.create(
        JobState(
            job_id=job_id,
            name="a-rather-long-job-name-for-a-table",
            job_file="/j.yaml",
            provider="vastai",
            output_dir="/o",
            phase="monitor",
            instance_id="123456789",
            message="training: step 40 of 400, loss 0.1234, and a message that runs on for a while",
        )
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "COLUMNS"}
    env["LORARUN_HOME"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "lorarun.runner.cli.app", "status"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert any(job_id in line and "123456789" in line for line in out.splitlines()), out
    assert "…" not in out
