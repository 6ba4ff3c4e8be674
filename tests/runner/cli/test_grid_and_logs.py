"""Small visible things (#12.7): the grid's labels are readable and name the seed and prompt; `logs` shows times as
local clock times; `--version` exists; tables are not cut at 80 columns when output is piped."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from PIL import Image

from lorarun.image.engine.grid import MIN_FONT_PX, PAGE_WIDTH_PX, compose_grid, grid_layout
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
    prompt = "lrnshape, a red circle on a white background"
    grid = compose_grid(cells, [0.0, 0.5, 0.8, 1.0], [1, 2], prompt)
    layout = grid_layout(64, 64, [0.0, 0.5, 0.8, 1.0], [1, 2], prompt)
    w, _ = grid.size
    x0, y0, _, _ = layout.cell_box(0, 0)
    # The label text is at least MIN_FONT_PX tall (the old grid used PIL's 11-pixel bitmap font in a 14-pixel band).
    assert _ink_rows(grid, (0, y0, x0, y0 + 64)) >= MIN_FONT_PX * 0.6  # "seed 1"
    assert _ink_rows(grid, (x0, 0, w, y0)) >= 2 * MIN_FONT_PX * 0.6  # prompt line(s) + strengths
    # The cells are pasted unchanged at their places.
    x, y, _, _ = layout.cell_box(1, 3)
    assert grid.getpixel((x + 10, y + 10)) == cells[1][3].getpixel((0, 0))


def test_grid_cells_have_white_gaps_between_them():
    """Issue 23.9: neighbouring samples were pasted edge to edge, reading as one picture."""
    cells = _cells(2, 3)
    grid = compose_grid(cells, [0.0, 0.5, 1.0], [1, 2], "p")
    layout = grid_layout(64, 64, [0.0, 0.5, 1.0], [1, 2], "p")
    assert layout.gap >= 4
    right_of_first = layout.cell_box(0, 0)[2]
    below_first = layout.cell_box(0, 0)[3]
    for dx in range(layout.gap):  # the column between cell (0,0) and (0,1)
        assert grid.getpixel((right_of_first + dx, layout.cell_box(0, 0)[1] + 5)) == (255, 255, 255)
    for dy in range(layout.gap):  # the row between cell (0,0) and (1,0)
        assert grid.getpixel((layout.cell_box(0, 0)[0] + 5, below_first + dy)) == (255, 255, 255)
    assert layout.cell_box(0, 1)[0] == right_of_first + layout.gap


def _first_text_line_height(image: Image.Image) -> int:
    """Rows from the top of the first run of rows holding dark pixels (the prompt's first line)."""
    grey = image.convert("L")
    w = grey.size[0]
    dark = [any(grey.getpixel((x, y)) < 100 for x in range(0, w, 2)) for y in range(grey.size[1] // 3)]
    start = dark.index(True)
    end = start
    while dark[end]:
        end += 1
    return end - start


@pytest.mark.parametrize("cell", [512, 1024])
def test_the_prompt_stays_legible_when_the_grid_is_shown_at_page_width(cell):
    """A 4 × 1024-px grid shown in the report's 760-px column is shrunk ~6×: the prompt must survive that
    (it read ~11 px tall there, descenders included, before issue 23.9)."""
    cells = [[Image.new("RGB", (cell, cell), (90, 90, 90))] * 4 for _ in range(2)]
    grid = compose_grid(cells, [0.0, 0.5, 0.8, 1.0], [1, 2], "mychar, smiling, upper body")
    scale = PAGE_WIDTH_PX / grid.size[0]
    assert _first_text_line_height(grid) * scale >= 13


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
