"""Who may talk to `lorarun ui`, and what it hands out: the token (403 without it), actions only with the token in
a header (a cookie alone, which another site's page could ride, is not enough), this server's own Host only, and
files from the job's output folder only. Real HTTP on 127.0.0.1 against the real server."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from lorarun.runner.state import JobState, JobStore
from lorarun.runner.ui.server import UIServer


@pytest.fixture
def ui(tmp_path):
    store = JobStore()
    out = tmp_path / "out"
    (out / "samples").mkdir(parents=True)
    (out / "samples" / "s_e000001_00.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 32)
    (out / "report.html").write_text("<h1>report</h1><script>window.x=1</script>", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("not yours", encoding="utf-8")
    os.symlink(tmp_path / "secret.txt", out / "link.txt")
    state = store.create(
        JobState(
            job_id="job-abc123", name="j", job_file=str(tmp_path / "j.yaml"), provider="local", output_dir=str(out)
        )
    )
    store.advance(state, "monitor")
    server = UIServer(store, port=0).start()
    yield server
    server.close()


def get(url: str, headers: dict | None = None, method: str = "GET", data: bytes | None = None):
    request = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def base(ui: UIServer) -> str:
    return f"http://127.0.0.1:{ui.port}"


@pytest.mark.parametrize(
    "path", ["/", "/index.html", "/static/app.js", "/api/jobs", "/api/jobs/job-abc123", "/files/job-abc123/report.html"]
)
def test_every_path_needs_the_token(ui, path):
    assert get(base(ui) + path)[0] == 403
    assert get(base(ui) + path + "?token=wrong" + ui.token[5:])[0] == 403
    assert get(base(ui) + path, {"Cookie": f"{ui.cookie_name}=nope"})[0] == 403
    assert get(base(ui) + path + "?token=" + ui.token)[0] == 200


def test_the_printed_address_opens_the_page_and_its_cookie_carries_the_token(ui):
    assert ui.url == f"http://127.0.0.1:{ui.port}/?token={ui.token}"
    status, headers, body = get(ui.url)
    assert status == 200 and b"<title>lorarun</title>" in body
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{ui.cookie_name}={ui.token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["Referrer-Policy"] == "no-referrer"
    status, _, body = get(base(ui) + "/api/jobs", {"Cookie": cookie.split(";")[0]})
    assert status == 200 and json.loads(body)["jobs"][0]["id"] == "job-abc123"


def test_actions_need_the_token_in_a_header(ui):
    url = base(ui) + "/api/jobs/job-abc123/stop"
    cookie = {"Cookie": f"{ui.cookie_name}={ui.token}", "Content-Type": "application/json"}
    assert get(url, cookie, "POST", b"{}")[0] == 403  # what a form on another site could send
    assert get(url + "?token=" + ui.token, {}, "POST", b"{}")[0] == 403
    assert get(url, {"X-Lorarun-Token": "x" * 32}, "POST", b"{}")[0] == 403
    assert ui.actions.runs("job-abc123") == [], "nothing was started"
    status, _, body = get(base(ui) + "/api/jobs/nope-1/stop", {"X-Lorarun-Token": ui.token}, "POST", b"{}")
    assert status == 404 and "no job" in json.loads(body)["message"]


def test_another_host_name_is_refused(ui):
    # DNS rebinding: a name that resolves to 127.0.0.1 must not reach the page from that name's origin.
    status, _, _ = get(base(ui) + "/api/jobs?token=" + ui.token, {"Host": f"evil.example:{ui.port}"})
    assert status == 403
    assert get(base(ui) + "/api/jobs?token=" + ui.token, {"Host": f"localhost:{ui.port}"})[0] == 200


@pytest.mark.parametrize(
    "rel", ["../secret.txt", "%2e%2e/secret.txt", "link.txt", "samples/../../secret.txt", "/etc/passwd", "nothing.png"]
)
def test_only_files_inside_the_output_folder(ui, rel):
    status, _, body = get(f"{base(ui)}/files/job-abc123/{rel}?token={ui.token}")
    assert status in (403, 404) and b"not yours" not in body


def test_output_files_are_served_sandboxed_and_revalidated(ui):
    status, headers, body = get(f"{base(ui)}/files/job-abc123/report.html?token={ui.token}")
    assert status == 200 and b"<h1>report</h1>" in body
    assert headers["Content-Security-Policy"].startswith("sandbox"), "a report's markup runs no script"
    status, headers, _ = get(f"{base(ui)}/files/job-abc123/samples/s_e000001_00.png?token={ui.token}")
    assert status == 200 and headers["Content-Type"] == "image/png"
    again = get(
        f"{base(ui)}/files/job-abc123/samples/s_e000001_00.png?token={ui.token}", {"If-None-Match": headers["ETag"]}
    )
    assert again[0] == 304


def test_only_loopback_unless_asked(tmp_path):
    server = UIServer(JobStore(), port=0)
    try:
        assert server.httpd.server_address[0] == "127.0.0.1"
        assert server.allowed_hosts() == {f"{h}:{server.port}" for h in ("127.0.0.1", "localhost", "[::1]")}
    finally:
        server.close()


def test_a_taken_port_moves_to_the_next_free_one():
    first = UIServer(JobStore(), port=0)
    try:
        second = UIServer(JobStore(), port=first.port)
        try:
            assert second.port != first.port
        finally:
            second.close()
    finally:
        first.close()


def test_the_page_needs_no_internet():
    """No CDN: every asset is in the package, and the page's CSP lets it load nothing from elsewhere."""
    import re
    from importlib import resources

    static = resources.files("lorarun.runner.ui").joinpath("static")
    for name in ("index.html", "app.js", "app.css", "favicon.svg"):
        text = static.joinpath(name).read_text(encoding="utf-8")
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (name, urls)
