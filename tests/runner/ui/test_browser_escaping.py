"""Every string a job supplies is shown as text in a real headless Chromium: a job named `<script>`, markup in its
message, its GPU name, its events and its file names runs nothing and shows literally — in the list and on the
job's page. And an instance not confirmed destroyed leads the list, in red."""

from __future__ import annotations

import json
import time

import pytest
from support.browser import headless_chromium

from lorarun.runner.state import JobState, JobStore
from lorarun.runner.ui.server import UIServer

HOSTILE = "<script>window.__pwned = 1</script>"
HOSTILE_IMG = '<img src=x onerror="window.__pwned = 2">'


def _wait(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.fixture
def store(tmp_path) -> JobStore:
    store = JobStore()
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{HOSTILE_IMG}.txt").write_text("x", encoding="utf-8")
    hostile = store.create(
        JobState(
            job_id="script-abc123",
            name=HOSTILE,
            job_file=str(tmp_path / "job.yaml"),
            provider="vastai",
            output_dir=str(out),
            gpu=HOSTILE_IMG,
            instance_id="4242",
            price_per_hour=0.4,
        )
    )
    hostile = store.advance(store.advance(hostile, "provision"), "failed", f"failed: {HOSTILE_IMG}")
    events = [
        {"t": time.time(), "event": "started", "total_steps": 10},
        {"t": time.time(), "event": "step", "step": 3, "total_steps": 10, "loss": 0.2, "epoch": 1, "it_s": 1.5},
        {"t": time.time(), "event": "warning", "message": HOSTILE},
    ]
    (store.job_dir(hostile.job_id) / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    older = store.create(
        JobState(job_id="calm-def456", name="calm", job_file="/j.yaml", provider="local", output_dir=str(out))
    )
    store.advance(older, "done", "finished")
    # created later than the hostile job, yet listed after it: that one needs the user
    store.save(JobState(**{**store.load("calm-def456").__dict__, "created_at": time.time() + 60}))
    return store


def test_job_strings_show_as_text_and_run_nothing(store):
    server = UIServer(store, port=0).start()
    try:
        with headless_chromium() as browser:
            browser.get(server.url)
            _wait(lambda: browser.execute_script("return document.querySelectorAll('#jobs tbody tr').length === 2"))
            ids = browser.execute_script(
                "return [...document.querySelectorAll('#jobs tbody tr')].map((r) => r.dataset.jobId)"
            )
            assert ids == ["script-abc123", "calm-def456"], "the instance not confirmed destroyed comes first"
            first = "#jobs tbody tr:first-child"
            assert browser.execute_script(f"return document.querySelector('{first}').className") == "attention"
            assert browser.execute_script(f"return document.querySelector('{first} .job-name').textContent") == HOSTILE
            assert "NOT confirmed destroyed" in browser.execute_script(
                f"return document.querySelector('{first} .instance').textContent"
            )
            colour = browser.execute_script(
                f"return getComputedStyle(document.querySelector('{first} .instance')).color"
            )
            assert colour == "rgb(198, 40, 40)", colour
            assert browser.execute_script("return document.querySelectorAll('main script, main img').length") == 0
            assert "?token=" not in browser.current_url, "the token leaves the address bar"

            browser.execute_script("document.querySelector('#jobs tbody tr:first-child .job-name').click()")
            _wait(lambda: browser.execute_script("return !!document.getElementById('events')"))
            page = browser.execute_script("return document.getElementById('view').textContent")
            assert HOSTILE in page and HOSTILE_IMG in page and f"failed: {HOSTILE_IMG}" in page
            assert browser.execute_script("return document.getElementById('job-name').textContent") == HOSTILE
            assert HOSTILE in browser.execute_script("return document.getElementById('events').textContent")
            assert HOSTILE_IMG in browser.execute_script("return document.getElementById('files').textContent")
            assert browser.execute_script("return document.querySelectorAll('main script, main img').length") == 0
            assert browser.execute_script("return window.__pwned === undefined")
            assert browser.title == "lorarun"
    finally:
        server.close()
