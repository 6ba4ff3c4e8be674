"""Shared plumbing of the fake provider APIs: a real HTTP server on 127.0.0.1, a request log and fault injection.

Each fake subclasses `FakeAPI` and implements `route(req) -> Reply`. Faults queued with `fail_next` answer
before routing, so a fault never changes the fake's state (as a real 429 or 5xx would not).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    raw: bytes
    client_port: int = 0  # the caller's TCP port: the same one again means a reused (keep-alive) connection
    at: float = 0.0  # when it arrived, on the fake's clock (`fake.clock`, which a test may share with lorarun's)

    def json(self) -> Any:
        try:
            return json.loads(self.raw) if self.raw else None
        except ValueError:
            return ValueError  # sentinel: the body was not JSON

    def token(self) -> str | None:
        """The key sent as `Authorization: Bearer <key>`, else as `?api_key=` (both are accepted, §1.1/§2.1)."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return self.query.get("api_key")


@dataclass
class Reply:
    status: int
    body: Any = None  # dict/list → JSON; str/bytes → as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class _Fault:
    method: str
    path_prefix: str
    times: int
    reply: Reply | None  # None: answer normally (a delay-only fault)
    after_route: bool = False  # do what the request asks, then answer `reply` (a 502 although it was created)
    delay: float = 0.0  # seconds before the request is acted on and answered (a slow API)
    body_contains: bytes = b""  # only requests whose body holds this (one GraphQL operation on /graphql)
    on_arrival: Callable[[], None] | None = None  # called (server thread) when the request arrives: a named point


class FakeAPI:
    """Base of the fakes. Use as a context manager: `with FakeVast() as fake: fake.url`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[Request] = []
        self._faults: list[_Fault] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                req = Request(
                    self.command,
                    parts.path,
                    dict(urllib.parse.parse_qsl(parts.query)),
                    {k.lower(): v for k, v in self.headers.items()},
                    raw,
                    self.client_address[1],
                    getattr(fake, "clock", time.time)(),
                )
                reply = fake._dispatch(req)
                data = reply.encode()
                try:
                    self.send_response(reply.status)
                    if data or reply.status not in (204, 304):
                        self.send_header("Content-Type", reply.content_type)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if data:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout): as a real server, move on

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- fault injection ---------------------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        path_prefix: str,
        *,
        status: int,
        times: int = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
        after_route: bool = False,
        body_contains: bytes = b"",
    ) -> None:
        """The next `times` requests of `method` whose path starts with `path_prefix` (and whose body holds
        `body_contains`, e.g. b"podFindAndDeployOnDemand" on RunPod's one GraphQL path) get this answer.

        Without `body`, the provider's documented body for that status is used (`default_error`). With
        `after_route`, the request is first carried out (a create creates), then answered with the fault: a
        gateway error in front of an API that did the work.
        """
        if body is None:
            reply = self.default_error(status)
        else:
            reply = Reply(
                status,
                body,
                content_type=content_type or ("text/plain" if isinstance(body, (str, bytes)) else "application/json"),
            )
        if headers:
            reply.headers.update(headers)
        with self.lock:
            self._faults.append(
                _Fault(method.upper(), path_prefix, times, reply, after_route=after_route, body_contains=body_contains)
            )

    def delay_next(
        self,
        method: str,
        path_prefix: str,
        *,
        seconds: float,
        times: int = 1,
        body_contains: bytes = b"",
        on_arrival: Callable[[], None] | None = None,
    ) -> None:
        """The next `times` matching requests wait `seconds`, then are acted on and answered as usual: a client
        that gives up (or is interrupted) meanwhile still gets an instance made by a create. `on_arrival` runs as
        such a request arrives, before the wait: a test injects its fault there (a Ctrl-C while the call is in
        flight) instead of guessing when the call will be made."""
        with self.lock:
            self._faults.append(
                _Fault(
                    method.upper(),
                    path_prefix,
                    times,
                    None,
                    delay=seconds,
                    body_contains=body_contains,
                    on_arrival=on_arrival,
                )
            )

    def clear_faults(self) -> None:
        """Forget every injected fault not yet used up (the API "comes back")."""
        with self.lock:
            self._faults.clear()

    def default_error(self, status: int) -> Reply:
        return Reply(status, {"error": "fault", "msg": f"injected {status}"})

    def requests_to(self, method: str, path_prefix: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def _dispatch(self, req: Request) -> Reply:
        chosen: _Fault | None = None
        with self.lock:
            self.requests.append(req)
            for fault in self._faults:
                if (
                    fault.method == req.method
                    and req.path.startswith(fault.path_prefix)
                    and fault.times > 0
                    and fault.body_contains in req.raw
                ):
                    fault.times -= 1
                    chosen = fault
                    break
        if chosen is not None and chosen.on_arrival is not None:
            chosen.on_arrival()
        if chosen is not None and chosen.delay:
            time.sleep(chosen.delay)  # outside the lock: other requests are served meanwhile
        if chosen is not None and chosen.reply is not None and not chosen.after_route:
            return chosen.reply
        try:
            reply = self.route(req)
        except Exception as exc:  # a bug in the fake must show up as a 500 the test will notice
            return Reply(500, f"fake crashed: {type(exc).__name__}: {exc}", content_type="text/plain")
        return chosen.reply if chosen is not None and chosen.reply is not None else reply

    def route(self, req: Request) -> Reply:  # pragma: no cover - abstract
        raise NotImplementedError
