"""Fixtures of the agent's tests: a fake clock that scripts the controller's side, and a recording HTTP server."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lorarun.image.agent_files import AgentConfig

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
T0 = 1_700_000_000.0  # fake "now" at the start of every test


class FakeClock:
    """Unix time that only moves when the agent sleeps.

    `gate` holds time still until it returns True (e.g. until the fake engine has installed its SIGTERM handler,
    which takes real milliseconds); `on_sleep` runs on every sleep and plays the controller (touch the heartbeat,
    write `collected`, ask the agent to stop). A tiny real sleep lets the engine subprocess make progress.
    """

    def __init__(self, start: float = T0) -> None:
        self.t = start
        self.gate: Callable[[], bool] = lambda: True
        self.on_sleep: Callable[[FakeClock], None] = lambda clock: None
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(0.002)
        if self.gate():
            self.t += seconds
        self.on_sleep(self)


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None


@dataclass
class RecordingServer:
    """An HTTP server on 127.0.0.1 that records each request and answers from a script of status codes."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in order; 200 once the script runs out


@pytest.fixture
def http_server():
    state = RecordingServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            state.requests.append(Recorded(self.command, self.path, self.headers.get("Authorization")))
            status = state.statuses.pop(0) if state.statuses else 200
            body = json.dumps({"success": 200 <= status < 300}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def engine_command(output_dir: Path, mode: str, *extra: str) -> tuple[str, ...]:
    return (sys.executable, str(FAKE_ENGINE), "--output-dir", str(output_dir), "--mode", mode, *extra)


def make_config(tmp_path: Path, mode: str, *extra: str, **overrides) -> AgentConfig:
    output_dir = tmp_path / "job" / "output"
    values = dict(
        job_id="job42",
        engine_command=engine_command(output_dir, mode, *extra),
        output_dir=str(output_dir),
        lease_deadline=T0 + 3600,
        grace_seconds=600.0,
    )
    values.update(overrides)
    return AgentConfig(**values)


def read_events(output_dir: str | Path) -> list[dict]:
    path = Path(output_dir) / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def names(events: list[dict]) -> list[str]:
    return [e["event"] for e in events]
