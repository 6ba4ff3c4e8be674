"""`lorarun ui` in a real headless Chromium while a job runs on the fake Vast.ai (its instance a real sshd, the real
engine training a tiny model on the CPU): the jobs list shows the job, its step count rises without a reload, a
checkpoint's sample images appear as they come home, and Stop (confirmed in the page's dialog) ends with the
instance confirmed destroyed, through `lorarun down` and the controller that holds the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_dataset import make_dataset
from support.browser import headless_chromium, require_browser

from lorarun.runner.state import JobStore
from lorarun.runner.ui.server import UIServer

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def sampled_job(tmp_path: Path, provider: str, epochs: int = 400) -> Path:
    """A tiny job that trains for a long time and renders one small sample after every epoch's checkpoint."""
    make_dataset(tmp_path / "data", {"2_mychar": 2})
    job = tmp_path / "job.yaml"
    job.write_text(
        f"""
name: ui-e2e
model:
  base: builtin:tiny-sd15
dataset:
  path: data
  resolution: 64
  min_bucket_reso: 32
  max_bucket_reso: 128
  bucket_reso_steps: 16
training:
  epochs: {epochs}
  batch_size: 2
  network_dim: 4
  network_alpha: 2
  optimizer: AdamW
  mixed_precision: "no"
  save_every_n_epochs: 1
sample:
  prompts: ["mychar, portrait"]
  every_n_epochs: 1
  steps: 2
  grid_strengths: [0.0, 1.0]
  grid_seeds: [1]
resources:
  provider: {provider}
  disk_gb: 20
output:
  dir: out
  name: ui_lora
""",
        encoding="utf-8",
    )
    return job


def submit_process(job: Path, log: Path) -> subprocess.Popen:
    code = "import sys; from lorarun.runner.cli.app import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, "submit", str(job), "--yes"],
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
        start_new_session=True,
    )


def wait_for(what: str, check, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"submit ended early while waiting for {what}: {log.read_text()[-3000:] if log else ''}"
            )
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}" + (f"; submit said: {log.read_text()[-3000:]}" if log else ""))


def click(browser, css: str, tries: int = 20) -> None:
    """A real click on what `css` names now (the page may have just redrawn it: find it again and retry)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(tries):
        try:
            browser.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise AssertionError(f"{css} kept being redrawn under the click")


def test_watch_a_running_job_and_stop_it_from_the_browser(vast_cloud, tmp_path):
    require_browser()
    from selenium.webdriver.common.by import By

    job = sampled_job(tmp_path, "vastai")
    log = tmp_path / "submit.log"
    proc = submit_process(job, log)
    ui = UIServer(JobStore(), port=0).start()
    try:
        with headless_chromium() as browser:
            browser.get(ui.url)

            # The page redraws as the job moves: read with one script each time (never a stale element).
            def cell(css: str) -> str | None:
                return browser.execute_script(
                    "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", css
                )

            wait_for("the job in the list", lambda: cell("#jobs tbody tr .job-name"), 120, proc, log)
            assert cell("#jobs tbody tr .job-name") == "ui-e2e"
            assert cell("#jobs tbody tr td:nth-child(2)") == "vastai"
            browser.execute_script("window.__same_page = 'yes'")  # gone if the page reloads

            def step_in_list() -> int | None:
                text = (cell("#jobs tbody tr .step") or "").split("/")[0].strip()
                return int(text) if text.isdigit() else None

            first = wait_for("a step count in the list", step_in_list, 300, proc, log)
            wait_for("the step count to rise", lambda: (step_in_list() or 0) > first, 120, proc, log)
            assert browser.execute_script("return window.__same_page") == "yes", "the list updated without a reload"
            assert "$" in cell("#jobs tbody tr .cost")
            assert cell("#jobs tbody tr .instance").endswith(": up")

            click(browser, "#jobs tbody tr .job-name")

            def sample_shown() -> str | None:
                return browser.execute_script(
                    "const i = [...document.querySelectorAll('#latest-samples img.sample')]"
                    ".find((i) => i.complete && i.naturalWidth > 0); return i ? i.src : null;"
                )

            src = wait_for("a checkpoint's sample image in the page", sample_shown, 300, proc, log)
            assert src.startswith(f"http://127.0.0.1:{ui.port}/files/") and src.endswith(".png")
            assert (cell("#step") or "").split("/")[0].strip().isdigit(), "the job page shows the live step too"
            assert "ui_lora-0000" in cell("#checkpoints")

            def loss_points() -> int:  # the live loss chart: one polyline point per logged step (downsampled)
                return browser.execute_script(
                    "const l = document.querySelector('#loss-chart polyline');"
                    "return l ? l.getAttribute('points').trim().split(/\\s+/).length : 0;"
                )

            drawn = wait_for("a loss curve of two points or more", lambda: loss_points() >= 2 and loss_points(), 120)
            wait_for("the loss curve to grow without a reload", lambda: loss_points() > drawn, 120, proc, log)
            assert browser.execute_script("return window.__same_page") == "yes"
            assert " step " in (cell("#events") or ""), "the events log shows the engine's step events"
            if shot := os.environ.get("LORARUN_UI_SCREENSHOT"):  # README's picture: docs/ui.png
                wait_for("a longer loss curve", lambda: int((cell("#step") or "0").split("/")[0]) >= 120, 300)
                browser.set_window_size(1280, 1500)
                time.sleep(1.5)
                browser.save_screenshot(shot)

            click(browser, "#stop-button")
            wait_for("the confirmation dialog", lambda: browser.find_element(By.ID, "confirm").is_displayed(), 10)
            assert "destroyed" in cell("#confirm-text")
            click(browser, "#confirm-yes")

            def destroyed() -> bool:
                return browser.execute_script(
                    "const e = document.getElementById('instance-state'); return !!e && e.dataset.state === 'destroyed';"
                )

            wait_for("the instance confirmed destroyed in the page", destroyed, 300)
            assert "destroyed (confirmed by vastai)" in cell("#instance-state")
            assert "lorarun down" in (cell("#actions-log") or "")
            wait_for("the report's link", lambda: cell("#report-link"), 60)
            estimate = cell("#estimate")
            assert "predicted before renting" in estimate and "actual" in estimate and "training" in estimate
            href = browser.execute_script("return document.getElementById('report-link').href")
            assert href.endswith("/report.html")
            browser.get(href)  # opens with the cookie the page set: no token in this address
            assert "ui-e2e" in browser.page_source
        assert proc.wait(120) == 0, log.read_text()[-3000:]
        (state,) = JobStore().all()
        assert state.phase == "stopped" and state.instance_destroyed, state.message
        assert "stopped by `lorarun down`" in state.message
        assert vast_cloud.instance_ids() == [] and not vast_cloud.host.alive(state.instance_id)
        assert list((tmp_path / "out").glob("ui_lora*.safetensors")), "the checkpoint saved at the stop came home"
        ui.actions.wait_all(60)
        assert not JobStore().lock_path(state.job_id).exists()
    finally:
        ui.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_the_final_grid_appears_when_a_job_finishes(vast_cloud, tmp_path):
    """A job left to finish: its strength x seed grid comes home, shows on its page, and the page ends on the
    instance confirmed destroyed, with no button pressed."""
    require_browser()
    job = sampled_job(tmp_path, "vastai", epochs=2)
    log = tmp_path / "submit.log"
    proc = submit_process(job, log)
    ui = UIServer(JobStore(), port=0).start()
    try:
        with headless_chromium() as browser:
            browser.get(ui.url)
            wait_for(
                "the job in the list",
                lambda: browser.execute_script("return !!document.querySelector('#jobs tbody tr .job-name')"),
                120,
                proc,
                log,
            )
            browser.execute_script("document.querySelector('#jobs tbody tr .job-name').click()")

            def grid_shown() -> str | None:
                return browser.execute_script(
                    "const i = document.querySelector('#grid img.grid-image');"
                    "return i && i.complete && i.naturalWidth > 0 ? i.src : null;"
                )

            src = wait_for("the strength x seed grid in the page", grid_shown, 300)
            assert src.endswith("/ui_lora_grid.png")
            wait_for(
                "the instance confirmed destroyed",
                lambda: browser.execute_script(
                    "const e = document.getElementById('instance-state'); return !!e && e.dataset.state === 'destroyed';"
                ),
                300,
            )
            assert browser.execute_script("return document.getElementById('stop-button').disabled")
        assert proc.wait(60) == 0, log.read_text()[-3000:]
        assert vast_cloud.instance_ids() == []
    finally:
        ui.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
