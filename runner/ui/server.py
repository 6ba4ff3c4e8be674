"""The `lorarun ui` web server: the standard library's threaded HTTP server, JSON for the page to poll, the output
files, and the page's three static assets shipped in the package (no CDN: it works with no internet).

Access, as Jupyter does it: a random token in the address printed at start; the page's first load with it sets a
cookie (HttpOnly, SameSite=Strict) so images and links need not carry it. Every request without the token or the
cookie gets 403. Actions (POST) need the token in a header, which another site's page cannot send (no CORS here), so
a page elsewhere in the browser cannot press stop. A Host header other than this server's own is refused (DNS
rebinding). Pages carry a Content-Security-Policy that allows only this server's own script; output files are
served sandboxed, so a report or file with markup in it runs nothing.
"""

from __future__ import annotations

import hmac
import http.server
import ipaddress
import json
import mimetypes
import re
import secrets
import shutil
import socket
import threading
from http import HTTPStatus
from http.cookies import SimpleCookie
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from lorarun.runner.errors import JobNotFound
from lorarun.runner.run.monitor import local_output_path
from lorarun.runner.state import JobStore
from lorarun.runner.ui.actions import Actions
from lorarun.runner.ui.views import EventCache, job_detail, jobs_list

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STATIC = {"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}
PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
FILE_CSP = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"
PORT_TRIES = 10  # the asked port, then the next ones, then any free one


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _asset(name: str) -> bytes:
    return resources.files("lorarun.runner.ui").joinpath("static", name).read_bytes()


class UIServer:
    def __init__(self, store: JobStore, *, host: str = "127.0.0.1", port: int = 8642, token: str | None = None):
        self.store = store
        self.token = token or secrets.token_urlsafe(24)
        self.cache = EventCache()
        self.actions = Actions(store, self.cache)
        self._lock = threading.Lock()  # the event cache is shared by the request threads
        self.httpd = _bind(host, port, _handler_for(self))
        self.host = host
        self.port = self.httpd.server_address[1]
        self.cookie_name = f"lorarun_ui_{self.port}"
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"http://{shown}:{self.port}/?token={self.token}"

    def allowed_hosts(self) -> set[str] | None:
        """Host headers this server answers; None when it listens beyond loopback (the user chose the names)."""
        if not is_loopback(self.host):
            return None
        return {f"{name}:{self.port}" for name in ("127.0.0.1", "localhost", "[::1]")}

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.5)

    def start(self) -> UIServer:
        """Serve from a background thread (tests, and anyone embedding the UI)."""
        self._thread = threading.Thread(target=self.serve_forever, name="lorarun-ui", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(10)
        self.httpd.server_close()

    # -- answers --------------------------------------------------------------------------------------------------
    def jobs(self) -> dict:
        with self._lock:
            return {"jobs": jobs_list(self.store, self.cache)}

    def job(self, job_id: str) -> dict:
        state = self.store.load(job_id)
        with self._lock:
            detail = job_detail(self.store, state, self.cache)
        detail["actions"] = self.actions.runs(state.job_id)
        detail["actions_log"] = self.actions.log_tail(state.job_id)
        return detail


def _bind(host: str, port: int, handler) -> http.server.ThreadingHTTPServer:
    family_v6 = ":" in host
    server_cls = type(
        "UIHTTPServer",
        (http.server.ThreadingHTTPServer,),
        {
            "daemon_threads": True,
            "allow_reuse_address": True,
            **({"address_family": socket.AF_INET6} if family_v6 else {}),
        },
    )
    tries = [port + i for i in range(PORT_TRIES)] if port else []
    for candidate in [*tries, 0]:
        try:
            return server_cls((host, candidate), handler)
        except OSError:
            continue
    raise OSError(f"no free port on {host}")


def _handler_for(ui: UIServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "lorarun-ui"
        sys_version = ""

        def log_message(self, format, *args):
            pass  # the terminal shows the address and errors, not every poll

        # -- access -------------------------------------------------------------------------------------------
        def _host_ok(self) -> bool:
            allowed = ui.allowed_hosts()
            return allowed is None or (self.headers.get("Host") or "") in allowed

        def _token_from_request(self, *, header_only: bool) -> str | None:
            given = self.headers.get("X-Lorarun-Token")
            if given or header_only:
                return given
            query = parse_qs(urlsplit(self.path).query).get("token")
            if query:
                return query[0]
            cookie = SimpleCookie(self.headers.get("Cookie") or "")
            morsel = cookie.get(ui.cookie_name)
            return morsel.value if morsel else None

        def _authorised(self, *, header_only: bool = False) -> bool:
            token = self._token_from_request(header_only=header_only)
            return token is not None and hmac.compare_digest(token.encode(), ui.token.encode())

        def _refuse(self, status: HTTPStatus, text: str) -> None:
            self._send(status, (text + "\n").encode(), "text/plain; charset=utf-8")

        def _send(self, status: HTTPStatus, body: bytes, ctype: str, extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")  # the token never leaves in a Referer
            self.send_header("Content-Security-Policy", PAGE_CSP)
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data, status: HTTPStatus = HTTPStatus.OK) -> None:
            self._send(status, json.dumps(data, allow_nan=False, default=str).encode(), "application/json")

        # -- routes -------------------------------------------------------------------------------------------
        def do_GET(self) -> None:
            if not self._host_ok():
                return self._refuse(HTTPStatus.FORBIDDEN, "unknown Host header")
            if not self._authorised():
                return self._refuse(
                    HTTPStatus.FORBIDDEN, "403: open the address `lorarun ui` printed (its token is the password)"
                )
            path = unquote(urlsplit(self.path).path)
            try:
                if path in ("/", "/index.html"):
                    cookie = f"{ui.cookie_name}={ui.token}; HttpOnly; SameSite=Strict; Path=/"
                    page = _asset("index.html").replace(b"__TOKEN__", ui.token.encode())  # url-safe: no escaping
                    return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8", {"Set-Cookie": cookie})
                if path.startswith("/static/") and path[len("/static/") :] in STATIC:
                    name = path[len("/static/") :]
                    return self._send(HTTPStatus.OK, _asset(name), STATIC[name])
                if path == "/api/jobs":
                    return self._json(ui.jobs())
                if m := re.fullmatch(r"/api/jobs/([^/]+)", path):
                    return self._job(m.group(1))
                if m := re.fullmatch(r"/files/([^/]+)/(.+)", path):
                    return self._file(m.group(1), m.group(2))
            except JobNotFound as exc:
                return self._json({"error": str(exc)}, HTTPStatus.NOT_FOUND)
            return self._refuse(HTTPStatus.NOT_FOUND, "not found")

        do_HEAD = do_GET

        def do_POST(self) -> None:
            if not self._host_ok():
                return self._refuse(HTTPStatus.FORBIDDEN, "unknown Host header")
            if not self._authorised(header_only=True):
                return self._refuse(HTTPStatus.FORBIDDEN, "403: actions need the token in the X-Lorarun-Token header")
            m = re.fullmatch(r"/api/jobs/([^/]+)/(stop|pull|keep)", urlsplit(self.path).path)
            if not m or not JOB_ID.match(m.group(1)):
                return self._refuse(HTTPStatus.NOT_FOUND, "not found")
            try:
                length = min(int(self.headers.get("Content-Length") or 0), 65536)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            except ValueError:
                return self._json({"ok": False, "message": "the request body is not JSON"}, HTTPStatus.BAD_REQUEST)
            job_id, action = m.group(1), m.group(2)
            try:
                if action == "stop":
                    result = ui.actions.stop(job_id)
                elif action == "pull":
                    result = ui.actions.pull(job_id)
                else:
                    result = ui.actions.keep_checkpoint(job_id, str(body.get("checkpoint") or ""))
            except JobNotFound as exc:
                return self._json({"ok": False, "message": str(exc)}, HTTPStatus.NOT_FOUND)
            status = HTTPStatus.ACCEPTED if result.ok else HTTPStatus.CONFLICT
            return self._json({"ok": result.ok, "message": result.message}, status)

        def _job(self, job_id: str) -> None:
            if not JOB_ID.match(job_id) or not (ui.store.job_dir(job_id) / "state.json").is_file():
                return self._json({"error": f"no job {job_id!r}"}, HTTPStatus.NOT_FOUND)
            return self._json(ui.job(job_id))

        def _file(self, job_id: str, rel: str) -> None:
            """A file of the job's output folder; nothing outside it (symlinks included: local_output_path)."""
            if not JOB_ID.match(job_id) or not (ui.store.job_dir(job_id) / "state.json").is_file():
                return self._refuse(HTTPStatus.NOT_FOUND, "no such job")
            state = ui.store.load(job_id)
            local = local_output_path(Path(state.output_dir), rel)
            if local is None or not local.is_file():
                return self._refuse(HTTPStatus.NOT_FOUND, "no such file in the job's output folder")
            ctype = mimetypes.guess_type(local.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype == "application/json":
                ctype += "; charset=utf-8"
            st = local.stat()
            size, etag = st.st_size, f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
            if self.headers.get("If-None-Match") == etag:  # the page redraws each second: images are not sent again
                self.send_response(HTTPStatus.NOT_MODIFIED)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            self.send_response(HTTPStatus.OK)
            self.send_header("ETag", etag)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy", FILE_CSP)
            if local.suffix not in (".png", ".jpg", ".jpeg", ".webp", ".html", ".md", ".json", ".txt"):
                self.send_header("Content-Disposition", f'attachment; filename="{_ascii_name(local.name)}"')
            self.end_headers()
            if self.command != "HEAD":
                with local.open("rb") as fh:  # streamed: a LoRA is hundreds of MB
                    shutil.copyfileobj(fh, self.wfile, 1 << 20)

    return Handler


def _ascii_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._ -]", "_", name)
