"""The instance destroys itself with its own instance-scoped key: several ways in order, each confirmed.

Runs inside our image (the agent's grace window, the watchdog past the deadline), so it imports nothing from the
controller or the adapters: the plan it follows is image/destroy_plan.py's `DestroyPlan`, which the adapters
build and the controller hands over as JSON (the agent's `agent.json`, key `self_destruct`).

Why several ways, and why a confirmation:
- RunPod: whether REST v2 `DELETE /v2/pods/{id}` accepts the pod-scoped `RUNPOD_API_KEY` is not documented
  (/work/shared/reference/providers.md §2.7 "UNCONFIRMED"). runpodctl terminates through GraphQL `podTerminate`
  (runpod/runpodctl `api/pod.go::RemovePod`; runpod/runpod-python `api/mutations/pods.py`), and the old docs say
  the pod's own runpodctl is configured with a key "scoped to that pod" and can run `runpodctl remove pod
  $RUNPOD_POD_ID` (runpod/docs commit 60caf0ed `welcome/how-do-i/automatically-stop-my-pod.md`). The newer
  `runpodctl pod delete` exists only in recent builds (runpod/docs `pods/manage-pods.mdx`), so `remove pod`
  (old and new builds) is tried first.
- A status code alone proves nothing: a 404 from a wrong route (a v1 base URL, a proxy) looks like "gone". So a
  way only counts once a check shows the instance gone, and a "not found" only counts on a route that showed the
  instance moments before. When nothing worked, the result says so and the caller writes a loud event.
- A destroy that worked usually kills this very process (the container goes away); then nothing is reported,
  and the controller's teardown confirms from the laptop.
"""

from __future__ import annotations

import json
import logging
import subprocess
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorarun.image.destroy_plan import (
    COMMAND,
    GRAPHQL,
    RUNPOD_GRAPHQL,
    VAST_SHOW,
    DestroyCheck,
    DestroyPlan,
    DestroyWay,
)

log = logging.getLogger("lorarun.self_destroy")

PROC1_ENVIRON = Path("/proc/1/environ")
HTTP_ATTEMPTS = 5  # per way: 429/5xx/no answer are retried, doubling from 2 s (about half a minute in all)
HTTP_FIRST_DELAY = 2.0
HTTP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
CONFIRM_CHECKS = 6  # after a way was accepted: look this many times, CONFIRM_DELAY apart, for the instance gone
CONFIRM_DELAY = 5.0

PRESENT, GONE, UNKNOWN = "present", "gone", "unknown"


@dataclass(frozen=True)
class Outcome:
    ok: bool  # a way was accepted and the instance is gone, or (no check could read it) accepted unconfirmed
    confirmed: bool  # a check showed the instance gone
    via: str  # the way that did it ("" when none)
    attempts: int  # requests and commands sent in all
    tried: tuple[str, ...]  # one line per way: what it answered
    error: str = ""  # why it failed (key-free)


# -- environment -------------------------------------------------------------------------------------------------------
def read_proc_environ(path: Path) -> dict[str, str]:
    """The NUL-separated environment of a process (`/proc/1/environ`); empty when unreadable.

    Providers inject their variables into the container's first process; SSH sessions, and so the agent started
    over SSH, may not inherit them (providers.md §1.7, §2.7).
    """
    try:
        raw = path.read_bytes()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name:
            env[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def lookup_env(name: str, environ: Mapping[str, str], proc_environ: Path) -> str | None:
    value = environ.get(name)
    if value:
        return value
    return read_proc_environ(proc_environ).get(name) or None


# -- HTTP (requests, one session with connection reuse; injectable for tests) ------------------------------------
@dataclass(frozen=True)
class HttpResult:
    status: int | None  # None: no answer (connection refused, timeout, DNS)
    detail: str  # short, for the log; never carries the key
    body: Any = None  # parsed JSON, or None


HttpFn = Callable[..., HttpResult]  # (method, url, headers, json_body=None) -> HttpResult


class RequestsHttp:
    """`HttpFn` on one `requests.Session`: keep-alive between the way and its checks; never follows redirects
    (they would carry the Authorization header elsewhere); loopback never goes through a proxy."""

    def __init__(self, timeout: float = HTTP_TIMEOUT):
        import requests  # in the image with lorarun's own dependencies

        self._requests = requests
        self._session = requests.Session()
        self._timeout = timeout

    def __call__(self, method: str, url: str, headers: Mapping[str, str], json_body: Any = None) -> HttpResult:
        requests = self._requests
        host = urllib.parse.urlsplit(url).hostname or ""
        proxies = {"http": "", "https": ""} if host in ("127.0.0.1", "localhost", "::1") else None
        try:
            resp = self._session.request(
                method,
                url,
                headers=dict(headers),
                json=json_body,
                timeout=self._timeout,
                allow_redirects=False,
                proxies=proxies,
            )
        except requests.RequestException as exc:
            return HttpResult(None, f"{type(exc).__name__}")
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            body = None
        return HttpResult(resp.status_code, resp.text[:200], body)


def destroy_outcome(result: HttpResult) -> str:
    """ "accepted", "retry", "not_found" or "give_up" for one answer to a destroy request. A 404 is only a hint
    (a wrong route answers 404 too): a check must show the instance gone before it counts."""
    if result.status is None or result.status == 429 or result.status >= 500:
        return "retry"
    if 200 <= result.status < 300:
        return "accepted"
    if result.status == 404:
        return "not_found"
    return "give_up"  # 400/401/403: the request or the key is wrong; asking again changes nothing


# -- the procedure -------------------------------------------------------------------------------------------------------
Runner = Callable[..., subprocess.CompletedProcess]


class SelfDestroyer:
    def __init__(
        self,
        config: DestroyPlan,
        *,
        environ: Mapping[str, str],
        proc_environ: Path = PROC1_ENVIRON,
        sleep: Callable[[float], None],
        http: HttpFn | None = None,
        run: Runner = subprocess.run,
    ):
        self.config = config
        self.environ = environ
        self.proc_environ = proc_environ
        self.sleep = sleep
        self.http = http or RequestsHttp()
        self.run_command = run
        self._seen: set[int] = set()  # checks that have shown the instance present: their "not found" counts
        self._attempts = 0

    def destroy(self) -> Outcome:
        cfg = self.config
        instance_id = lookup_env(cfg.id_env, self.environ, self.proc_environ)
        key = lookup_env(cfg.key_env, self.environ, self.proc_environ)
        if not instance_id:
            return Outcome(False, False, "", 0, (), f"{cfg.id_env} not set (environment and {self.proc_environ})")
        self.instance_id, self.key = instance_id, key
        if key and self._look() == GONE:
            return Outcome(True, True, "already gone", 0, ())
        tried: list[str] = []
        accepted_by = ""
        for way in cfg.ways:
            if way.kind != COMMAND and not key:
                tried.append(f"{way.label()}: skipped, {cfg.key_env} not set (environment and {self.proc_environ})")
                continue
            verdict, detail = self._send(way)
            tried.append(f"{way.label()}: {detail}")
            if verdict not in ("accepted", "not_found"):
                continue
            state = self._confirm() if key else UNKNOWN
            if state == GONE:
                return self._done(True, True, way.kind, tried)
            if state == PRESENT:
                tried[-1] += "; the instance is still there"
                continue
            if verdict == "accepted" and not accepted_by:
                accepted_by = way.kind  # nothing can read the state: keep trying the other ways, they are harmless
        if accepted_by:
            return self._done(True, False, accepted_by, tried)
        why = "; ".join(tried) or "no way to destroy this instance is configured"
        return self._done(False, False, "", tried, why)

    def _done(self, ok: bool, confirmed: bool, via: str, tried: list[str], error: str = "") -> Outcome:
        return Outcome(
            ok, confirmed, via, self._attempts, tuple(_redact(t, self.key) for t in tried), _redact(error, self.key)
        )

    # -- ways -----------------------------------------------------------------------------------------------------
    def _fill(self, text: str, *, quote: bool) -> str:
        value = urllib.parse.quote(self.instance_id, safe="") if quote else json.dumps(self.instance_id)[1:-1]
        return text.replace("{instance_id}", value)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}

    def _send(self, way: DestroyWay) -> tuple[str, str]:
        if way.kind == COMMAND:
            return self._command(way)
        if way.kind == GRAPHQL:
            return self._graphql(way)
        url = self._fill(way.url, quote=True)
        delay = HTTP_FIRST_DELAY
        for attempt in range(1, HTTP_ATTEMPTS + 1):
            self._attempts += 1
            result = self.http(way.method, url, self._headers())
            verdict = destroy_outcome(result)
            log.info("self-destroy %s %s: attempt %d → %s", way.method, url, attempt, result.status)
            if verdict == "accepted" and isinstance(result.body, dict) and result.body.get("success") is False:
                # Vast can answer 2xx with {"success": false, ...} (its general error shape, providers.md §1.9):
                # a refusal, whatever the status says.
                return "give_up", f"HTTP {result.status} success=false {_redact(result.detail, self.key)}"
            if verdict != "retry":
                return verdict, f"HTTP {result.status} {_redact(result.detail, self.key)}".strip()
            if attempt < HTTP_ATTEMPTS:
                self.sleep(delay)
                delay *= 2
        return "give_up", f"HTTP {result.status} after {HTTP_ATTEMPTS} attempts: {_redact(result.detail, self.key)}"

    def _graphql(self, way: DestroyWay) -> tuple[str, str]:
        """`mutation { podTerminate(input: {podId: "…"}) }` (RPPY `mutations/pods.py`). GraphQL answers HTTP 200
        with an `errors` list on failure (providers.md §2.9): only 200 without errors is accepted."""
        body = {"query": self._fill(way.query, quote=False)}
        delay = HTTP_FIRST_DELAY
        for attempt in range(1, HTTP_ATTEMPTS + 1):
            self._attempts += 1
            result = self.http("POST", way.url, self._headers(), json_body=body)
            if destroy_outcome(result) != "retry":
                break
            if attempt < HTTP_ATTEMPTS:
                self.sleep(delay)
                delay *= 2
        if result.status != 200:
            return "give_up", f"HTTP {result.status} {_redact(result.detail, self.key)}".strip()
        errors = result.body.get("errors") if isinstance(result.body, dict) else None
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {}
            # "pod not found to terminate" (DSTACK runpod/compute.py treats it as gone): a hint, confirmed below.
            message = _redact(str(first.get("message") or errors), self.key)[:200]
            return ("not_found" if "not found" in message else "give_up"), f"GraphQL error: {message}"
        return "accepted", "HTTP 200"

    def _command(self, way: DestroyWay) -> tuple[str, str]:
        argv = [a.replace("{instance_id}", self.instance_id) for a in way.argv]
        env = dict(
            self.environ,
            **{self.config.id_env: self.instance_id},
            **({self.config.key_env: self.key} if self.key else {}),
        )
        self._attempts += 1
        try:
            done = self.run_command(
                argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=COMMAND_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return "give_up", f"{type(exc).__name__}: {exc}"
        log.info("self-destroy command %s → exit %d", argv[0], done.returncode)
        if done.returncode == 0:
            return "accepted", "exit 0"
        tail = (done.stderr or done.stdout or b"").decode("utf-8", "replace").strip()[-200:]
        return "give_up", f"exit {done.returncode}: {_redact(tail, self.key)}"

    # -- checks ---------------------------------------------------------------------------------------------------
    def _confirm(self) -> str:
        state = UNKNOWN
        for i in range(CONFIRM_CHECKS):
            state = self._look()
            if state != PRESENT:
                return state
            if i < CONFIRM_CHECKS - 1:
                self.sleep(CONFIRM_DELAY)
        return state

    def _look(self) -> str:
        """The first check that can tell: present or gone; unknown when none can (no check, key refused)."""
        for index, check in enumerate(self.config.checks):
            state = self._check(index, check)
            if state != UNKNOWN:
                return state
        return UNKNOWN

    def _check(self, index: int, check: DestroyCheck) -> str:
        self._attempts += 1
        if check.style == RUNPOD_GRAPHQL:
            pod_id = json.dumps(self.instance_id)[1:-1]  # a JSON string's body: quotes and backslashes escaped
            query = f'query {{ pod(input: {{podId: "{pod_id}"}}) {{ id desiredStatus }} }}'
            result = self.http("POST", check.url, self._headers(), json_body={"query": query})
            data = result.body.get("data") if result.status == 200 and isinstance(result.body, dict) else None
            if not isinstance(data, dict) or "pod" not in data or result.body.get("errors"):
                return UNKNOWN
            pod = data["pod"]
            if isinstance(pod, dict) and pod.get("id") == self.instance_id:
                self._seen.add(index)
                return GONE if pod.get("desiredStatus") == "TERMINATED" else PRESENT
            return GONE if pod is None and index in self._seen else UNKNOWN
        result = self.http("GET", self._fill(check.url, quote=True), self._headers())
        body = result.body
        if check.style == VAST_SHOW:
            if result.status == 200 and isinstance(body, dict) and "instances" in body:
                inst = body["instances"]
                # `{"instances": null}` is also what an id the key cannot see answers (providers.md §1.4): gone
                # only after this check has seen the instance, so the DELETE is always sent at least once.
                if inst is None:
                    return GONE if index in self._seen else UNKNOWN
                if isinstance(inst, dict) and str(inst.get("id")) == self.instance_id:
                    self._seen.add(index)
                    return PRESENT
            return UNKNOWN
        # RUNPOD_REST: the pod itself, or the problem+json 404 — the latter only on a route that showed the pod.
        if result.status == 200 and isinstance(body, dict) and body.get("id") == self.instance_id:
            self._seen.add(index)
            return GONE if body.get("status") == "TERMINATED" else PRESENT
        if result.status == 404 and index in self._seen and isinstance(body, dict) and body.get("status") == 404:
            return GONE
        return UNKNOWN


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text
