"""The engine process ends right after `main` returns (image/engine/__main__.py `exit_now`), skipping the
interpreter's slow teardown of torch's module state, without losing what a normal exit keeps: the exit code, output
still buffered in stdout and stderr, the exit handlers, and a non-daemon thread's work (then it exits normally)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from lorarun.image.engine.__main__ import exit_now

marks = Path(sys.argv[1])
atexit.register(lambda: marks.joinpath("atexit").write_text("ran"))
if sys.argv[2] == "thread":
    def late():
        time.sleep(0.3)
        marks.joinpath("thread").write_text("done")
    threading.Thread(target=late).start()
sys.stdout.write("buffered out")
sys.stderr.write("buffered err")
exit_now(int(sys.argv[3]))
marks.joinpath("after").write_text("exit_now returned")
"""


def _run(tmp_path, mode: str, code: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), mode, str(code)], capture_output=True, text=True, timeout=60
    )


def test_exit_keeps_the_code_the_buffered_output_and_the_exit_handlers(tmp_path):
    result = _run(tmp_path, "alone", 3)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "buffered out" and result.stderr == "buffered err"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "after").exists()


def test_a_working_thread_is_waited_for(tmp_path):
    result = _run(tmp_path, "thread", 0)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "ran"
