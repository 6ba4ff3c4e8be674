"""A tiny JSON-over-HTTP helper on the standard library (no new dependency for the laptop install).

`request()` returns every HTTP answer, 4xx and 5xx included, as `HttpResponse(status, headers, body)`: the
provider clients decide what a status means. Only failures to get an answer at all (refused, reset, timeout,
DNS) raise, as `TransientError`. API keys must never reach a log line or an exception message: every text
that could echo a URL or a header goes through `redact()`.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable, Mapping, NamedTuple

from .errors import TransientError

log = logging.getLogger(__name__)

REDACTED = "***"
# `api_key=...` in a query string (Vast's and RunPod's older clients put the key there).
_QUERY_KEY = re.compile(r"(?i)(api_key=)[^&\s'\"]+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every secret, every `api_key=` query value and every Bearer token replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _QUERY_KEY.sub(rf"\g<1>{REDACTED}", text)
    return _BEARER.sub(rf"\g<1>{REDACTED}", text)


class HttpResponse(NamedTuple):
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON (Vast's 429s are plain text)."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def text(self, limit: int = 500) -> str:
        return self.body[:limit].decode("utf-8", "replace")


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects come back as answers (3xx), never followed: urllib would re-send the Authorization header
    to wherever the Location points, and none of the provider APIs redirects a JSON call."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib's signature
        return None


# Loopback (the test fakes) never goes through an HTTP proxy from the environment; other hosts honour it.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
_DEFAULT = urllib.request.build_opener(_NoRedirect)


def request(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    secrets: Iterable[str | None] = (),
) -> HttpResponse:
    """Send one request; return its answer whatever the status. Connection trouble → TransientError."""
    secrets = tuple(secrets)
    if query:
        url = f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(query)}"
    data = None
    all_headers = {"Accept": "application/json", "User-Agent": "lorarun"}
    if json_body is not None:
        data = json.dumps(json_body).encode()
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=all_headers, method=method)
    opener = _DIRECT if _is_loopback(url) else _DEFAULT
    where = redact(f"{method} {url}", secrets)
    try:
        with opener.open(req, timeout=timeout) as resp:
            answer = HttpResponse(resp.status, _lower(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:  # a real answer with a 4xx/5xx status
        try:
            body = err.read()
        except (OSError, http.client.HTTPException):
            body = b""
        answer = HttpResponse(err.code, _lower((err.headers or {}).items()), body)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        # URLError wraps refused/DNS; socket.timeout and ConnectionResetError are OSErrors; a server that hangs
        # up mid-answer raises RemoteDisconnected/IncompleteRead (HTTPException). All are worth another try.
        reason = getattr(err, "reason", err)
        kind = "timed out" if isinstance(reason, socket.timeout) else "failed"
        raise TransientError(redact(f"{where} {kind}: {type(reason).__name__}: {reason}", secrets)) from None
    log.debug("%s -> %d", where, answer.status)
    return answer


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in items}
