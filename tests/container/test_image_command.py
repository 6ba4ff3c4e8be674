"""`lorarun image build/show` against the real Docker engine: a failing step is named, a registry that refuses the
push says so, and `show` tells what is local and what the registry has. One line, exit 2, for each error."""

from __future__ import annotations

import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.container import client

from lorarun.runner.cli.app import main


@pytest.fixture
def empty_base(docker_ready):
    """An image with no files at all (an empty tar imported): nothing can RUN on it."""
    buf = io.BytesIO()
    tarfile.open(fileobj=buf, mode="w").close()
    c = client()
    image = c.api.import_image_from_data(buf.getvalue(), repository="lorarun-test-empty", tag="1")
    yield "lorarun-test-empty:1"
    c.images.remove("lorarun-test-empty:1", force=True)
    c.images.prune(filters={"dangling": True})
    del image


class _DenyingRegistry(BaseHTTPRequestHandler):
    """A registry that refuses every request as the Docker Registry HTTP API V2 does without credentials:
    401, `WWW-Authenticate: Basic`, and its error body (distribution spec, "UNAUTHORIZED")."""

    def _deny(self):
        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("WWW-Authenticate", 'Basic realm="lorarun-test"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _deny

    def log_message(self, *args):
        pass


@pytest.fixture
def denying_registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DenyingRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_failing_build_step_is_named(empty_base, capsys):
    assert main(["image", "build", "--base", empty_base, "--tag", "lorarun-test-broken"]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    line = errors[0]
    assert "docker build failed at Step" in line and "RUN apt-get update" in line, line


def test_push_denied_is_one_line(built_image, base_image, denying_registry, capsys):
    name = f"{denying_registry}/you/lorarun-engine"
    try:
        # Same context and base as `built_image`: every layer comes from the cache, then the push is refused.
        assert main(["image", "build", "--base", base_image, "--tag", f"{name}:t", "--push"]) == 2
        line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")][-1]
        assert f"push of {name}:t denied by {denying_registry}" in line and "docker login" in line, line
    finally:
        try:
            client().images.remove(f"{name}:t")
        except Exception:
            pass


def test_show_tells_local_and_registry(built_image, denying_registry, monkeypatch, capsys):
    monkeypatch.setenv("LORARUN_IMAGE", built_image)
    assert main(["image", "show"]) == 0
    out = capsys.readouterr().out
    assert built_image in out and "LORARUN_IMAGE" in out
    local = [ln for ln in out.splitlines() if ln.startswith("local")][0]
    assert "yes" in local
    # A registry that refuses to answer: whether it has the image is unknown, said as such.
    monkeypatch.setenv("LORARUN_IMAGE", f"{denying_registry}/you/lorarun-engine:nope")
    assert main(["image", "show"]) == 0
    out = capsys.readouterr().out
    assert [ln for ln in out.splitlines() if ln.startswith("local")][0].endswith("no")
    registry = [ln for ln in out.splitlines() if ln.startswith("registry")][0]
    assert "yes" not in registry, registry
