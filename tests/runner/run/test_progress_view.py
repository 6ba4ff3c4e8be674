"""Each long phase has its own line with what it is doing (#12.5): model download in bytes, caching N/M, training
with loss/speed/ETA, sampling k/n, and the final pull k/n — read back from rich's recording console."""

from __future__ import annotations

from rich.console import Console

from lorarun.image.engine.events import EventLog, PhaseProgress
from lorarun.runner.run import progress as progress_module
from lorarun.runner.run.monitor import MonitorProgress, read_jsonl


def _recording(monkeypatch) -> Console:
    console = Console(record=True, force_terminal=True, width=140, color_system=None)
    monkeypatch.setattr(progress_module, "err_console", console)
    return console


def _apply(state: MonitorProgress, *events: dict) -> None:
    from lorarun.runner.run.monitor import JobMonitor

    for event in events:
        JobMonitor._apply(type("M", (), {"progress": state})(), event)


def test_each_phase_gets_its_line_and_finished_ones_are_ticked(monkeypatch):
    console = _recording(monkeypatch)
    state = MonitorProgress()
    view = progress_module.TrainingView(total_steps=41, price_per_hour=0.4, max_cost=2.0)
    with view:
        view.update(state, 0.0)
        _apply(
            state,
            {"event": "progress", "phase": "model_download", "done": 1_200_000_000, "total": None, "unit": "bytes"},
        )
        view.update(state, 0.01)
        _apply(
            state,
            {
                "event": "progress",
                "phase": "model_download",
                "done": 2_000_000_000,
                "total": 2_000_000_000,
                "unit": "bytes",
            },
            {"event": "progress", "phase": "caching_latents", "done": 7, "total": 12, "unit": "images"},
        )
        view.update(state, 0.02)
        _apply(
            state,
            {"event": "progress", "phase": "caching_latents", "done": 12, "total": 12, "unit": "images"},
            {"event": "step", "step": 41, "total_steps": 41, "loss": 0.1234, "it_s": 2.5},
        )
        view.update(state, 0.30)
        _apply(state, {"event": "progress", "phase": "sampling_grid", "done": 3, "total": 8, "unit": "images"})
        view.update(state, 0.31)
        view.progress.refresh()
        text = console.export_text()
    assert "model download" in text and "2.0 GB of 2.0 GB" in text
    assert "caching latents" in text and "12/12 images" in text
    assert "training" in text and "41/41 · loss 0.1234 · 2.50 it/s" in text and "spent" in text
    assert "sampling grid" in text and "3/8 images" in text  # no longer a bar stuck at 41/41 with nothing said
    last_frame = text[text.rfind("engine starting") :]
    assert last_frame.count("✓") >= 3  # starting, model download and caching are ticked off


def test_the_final_pull_shows_files(monkeypatch):
    console = _recording(monkeypatch)
    with progress_module.pull_bar() as shown:
        shown(0, 3, "")
        shown(2, 3, "samples/demo_grid.png")
    text = console.export_text()
    assert "pulling files" in text and "2/3 samples/demo_grid.png" in text


def test_phase_progress_events_are_throttled_but_keep_first_and_last(tmp_path):
    events = EventLog(tmp_path)
    now = [0.0]
    report = PhaseProgress(events, "caching_latents", 1000, unit="images", clock=lambda: now[0])
    for done in range(1, 1001):
        now[0] = done * 0.01  # ten seconds in all
        report(done)
    events.close()
    lines = [e for e in read_jsonl(tmp_path / "events.jsonl") if e["event"] == "progress"]
    assert 8 <= len(lines) <= 12
    assert lines[0]["done"] == 1 and lines[-1]["done"] == 1000 and lines[-1]["total"] == 1000
    assert {e["phase"] for e in lines} == {"caching_latents"} and lines[0]["unit"] == "images"


def test_model_download_bytes_are_reported_while_the_cache_grows(tmp_path, monkeypatch):
    """The watch sees blobs arrive in the hub cache (huggingface_hub writes `blobs/<hash>.incomplete`) and reports
    the bytes, then closes the phase with its final size; a model already cached reports nothing."""
    import threading
    import time

    from lorarun.image.engine.download_watch import DownloadWatch

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    blobs = tmp_path / "hub" / "models--org--model" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "already").write_bytes(b"x" * 1000)  # was there before: not counted as downloaded
    events = EventLog(tmp_path / "out")

    def download():
        with open(blobs / "abc.incomplete", "wb") as fh:
            for _ in range(6):
                fh.write(b"y" * 50_000)
                fh.flush()
                time.sleep(0.1)

    with DownloadWatch(events, "org/model", interval=0.05):
        worker = threading.Thread(target=download)
        worker.start()
        worker.join()
    with DownloadWatch(events, "org/other", interval=0.05):
        time.sleep(0.2)
    events.close()
    lines = [e for e in read_jsonl(tmp_path / "out" / "events.jsonl") if e["event"] == "progress"]
    assert lines and {e["phase"] for e in lines} == {"model_download"} and lines[0]["unit"] == "bytes"
    assert lines[-1]["done"] == lines[-1]["total"] == 300_000
    assert len({e["done"] for e in lines}) >= 2  # it moved while downloading, not one line at the end
