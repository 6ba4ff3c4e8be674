"""`lorarun ui` as a user starts it: it prints an address with its token on 127.0.0.1, that address opens the page,
Ctrl-C ends it cleanly; `--host` beyond loopback warns. `lorarun pull` next to a live controller leaves it alone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from lorarun.runner.cli.app import main
from lorarun.runner.state import JobState, JobStore


def _start(*args: str) -> subprocess.Popen:
    code = "import sys; from lorarun.runner.cli.app import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, "ui", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, COLUMNS="200"),
        text=True,
    )


def test_ui_prints_its_address_serves_it_and_stops_on_ctrl_c():
    proc = _start("--port", "0")
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("lorarun ui: http://127.0.0.1:") and "/?token=" in line, line
        url = line.split(" ", 2)[2]
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and b"lorarun" in response.read()
        bare = url.split("?")[0] + "api/jobs"
        try:
            urllib.request.urlopen(bare, timeout=10)
            raise AssertionError("answered without the token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ui_beyond_loopback_warns():
    proc = _start("--port", "0", "--host", "0.0.0.0")
    try:
        deadline = time.monotonic() + 20
        line = proc.stdout.readline()
        assert "/?token=" in line
        proc.send_signal(signal.SIGINT)
        proc.wait(max(1.0, deadline - time.monotonic()))
        err = proc.stderr.read()
        assert "warning:" in err and "0.0.0.0" in err and "token" in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_pull_next_to_a_live_controller_leaves_the_job_to_it(tmp_path, capsys):
    store = JobStore()
    state = store.create(
        JobState(job_id="held-aaa111", name="h", job_file="/j.yaml", provider="local", output_dir=str(tmp_path))
    )
    store.update(store.advance(state, "monitor"), instance_id="i-1", remote_dir="/r")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store.lock_path(state.job_id).write_text(
            f'{{"pid": {sleeper.pid}, "host": "{socket.gethostname()}", "command": "submit", "since": 0}}'
        )
        assert main(["pull", "held"]) == 0
        out = capsys.readouterr().out
        assert f"driven by `lorarun submit` (pid {sleeper.pid}" in out and "as it appears" in out
        assert store.lock_holder(state.job_id).pid == sleeper.pid, "the holder keeps the job"
    finally:
        sleeper.kill()
        sleeper.wait()
