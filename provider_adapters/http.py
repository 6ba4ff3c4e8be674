"""JSON over HTTP for the provider clients, on `requests` sessions (connection reuse, timeouts).

`HttpSession.request()` returns every HTTP answer, 4xx and 5xx included, as `HttpResponse(status, headers, body)`:
the provider clients decide what a status means. Only failures to get an answer at all (refused, reset, timeout,
DNS) raise, as `TransientError`. API keys must never reach a log line or an exception message: every text that
could echo a URL or a header goes through `redact()`.

Redirects are never followed: `requests` would re-send the Authorization header to wherever the Location
points (it drops it only across hosts), and none of the provider APIs redirects a JSON call. Loopback (the test
fakes) never goes through an HTTP proxy from the environment; other hosts honour it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import requests

from lorarun.provider_adapters.errors import ProviderError, TransientError

log = logging.getLogger(__name__)

REDACTED = "***"
# `api_key=...` in a query string (Vast's and RunPod's older clients put the key there).
_QUERY_KEY = re.compile(r"(?i)(api_key=)[^&\s'\"]+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")
CONNECT_TIMEOUT = 10.0  # seconds to open a connection; `timeout` bounds each read


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


class HttpSession:
    """One provider client's connections: a keep-alive `requests.Session` per route kind (through the
    environment's proxy settings, or straight to loopback)."""

    def __init__(self, *, timeout: float = 30.0, secrets: Iterable[str | None] = ()):
        self.timeout = timeout
        self.secrets = tuple(s for s in secrets if s)
        self._default = requests.Session()
        self._direct = requests.Session()
        self._direct.trust_env = False  # no HTTP(S)_PROXY / .netrc for 127.0.0.1

    def close(self) -> None:
        self._default.close()
        self._direct.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        timeout: float | None = None,
        secrets: Iterable[str | None] = (),
    ) -> HttpResponse:
        """Send one request; return its answer whatever the status. Connection trouble → TransientError."""
        hidden = self.secrets + tuple(s for s in secrets if s)
        if query:
            url = f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(query)}"
        all_headers = {"Accept": "application/json", "User-Agent": "lorarun"}
        all_headers.update(headers or {})
        session = self._direct if _is_loopback(url) else self._default
        where = redact(f"{method} {url}", hidden)
        read_timeout = self.timeout if timeout is None else timeout
        try:
            resp = session.request(
                method,
                url,
                json=json_body,
                headers=all_headers,
                allow_redirects=False,
                timeout=(min(CONNECT_TIMEOUT, read_timeout), read_timeout),
            )
            answer = HttpResponse(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
            # Refused, reset, DNS, a server that hangs up mid-answer, a timeout: all worth another try.
            kind = "timed out" if isinstance(err, requests.Timeout) else "failed"
            raise TransientError(redact(f"{where} {kind}: {type(err).__name__}: {_reason(err)}", hidden)) from None
        except requests.RequestException as err:  # a malformed URL or the like: no retry helps
            raise ProviderError(redact(f"{where} failed: {type(err).__name__}: {err}", hidden)) from None
        log.debug("%s -> %d", where, answer.status)
        return answer


def _reason(err: Exception) -> str:
    """The innermost cause (urllib3's message names the URL, which `redact` cleans, and the socket error)."""
    inner: BaseException = err
    while isinstance(getattr(inner, "args", None), tuple) and inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    reason = getattr(inner, "reason", None)
    return str(reason if reason is not None else inner)


_SHARED = HttpSession()


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
    """One request on a shared session (tests and one-off calls); the clients keep their own `HttpSession`."""
    return _SHARED.request(
        method, url, json_body=json_body, headers=headers, query=query, timeout=timeout, secrets=secrets
    )
