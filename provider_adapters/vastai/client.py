"""Every HTTP call lorarun makes to Vast.ai, and the mapping of Vast's answers to typed errors.

Facts (endpoints, bodies, error shapes) come from /work/shared/reference/providers.md §1; section numbers are
cited where a choice depends on them. The client speaks Vast's dicts; `vastai.py` turns them into dataclasses.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any

from lorarun.provider_adapters import http, retry
from lorarun.provider_adapters.errors import (
    AuthError,
    CreateFailed,
    InsufficientFundsError,
    OfferGoneError,
    ProviderError,
    RateLimitError,
    TransientError,
)

DEFAULT_BASE_URL = "https://console.vast.ai"
PROVIDER = "vastai"

# Error codes seen in the `error` field (§1.3, §1.5, §1.9).
GONE_INSTANCE_CODES = frozenset({"not_found", "no_such_instance"})
AUTH_CODES = frozenset({"auth_error"})
# UNCONFIRMED: Vast documents no code or status for "not enough credit" (§1.3: one third party matches
# `insufficient_credit`). We map status 402 and these codes; anything else falls through to ProviderError,
# which the controller reports with Vast's own message.
FUNDS_CODES = frozenset({"insufficient_credit", "insufficient_funds", "missing_billing"})


def base_url_from_env(base_url: str | None = None) -> str:
    """Constructor argument, else `VAST_URL` (the official CLI's variable, §1.1), else the public console."""
    return (base_url or os.environ.get("VAST_URL") or DEFAULT_BASE_URL).rstrip("/")


def _fields(body: Any) -> tuple[str, str]:
    """(`error`, human message) from a Vast body; some endpoints send only `msg`, `message` or `detail` (§1.9)."""
    if not isinstance(body, dict):
        return "", ""
    code = body.get("error")
    msg = next((body[k] for k in ("msg", "message", "detail") if isinstance(body.get(k), str)), "")
    return (code if isinstance(code, str) else ""), msg


def error_for(resp: http.HttpResponse, path: str, secrets: tuple[str, ...] = ()) -> ProviderError:
    """The typed error for a non-2xx Vast answer, decided by status, `error` code and endpoint."""
    status = resp.status
    body = resp.json()
    code, msg = _fields(body)
    text = http.redact(f"Vast.ai {status} on {path}: {code or ''} {msg or resp.text(200)}".strip(), secrets)
    kw: dict[str, Any] = {"provider": PROVIDER, "status": status}
    if status == 429:
        # Vast sends no Retry-After and often a plain-text body (§1.9); honour the header should it appear.
        return RateLimitError(text, retry_after=_retry_after(resp), **kw)
    if status >= 500:
        return TransientError(text, **kw)
    if status in (401, 403) and (code in AUTH_CODES or not code):
        return AuthError(text, **kw)
    if status == 404 and "/bundles/" in path:
        # The search endpoint documents an invalid key as 404 "Invalid user key" (§1.2); a search has nothing
        # else that could be "not found", so the status and endpoint decide it.
        return AuthError(text, **kw)
    if code in AUTH_CODES:
        return AuthError(text, **kw)
    if status == 402 or code in FUNDS_CODES:
        return InsufficientFundsError(text, **kw)
    if "/asks/" in path and status in (404, 410):
        # Offer taken or unavailable: 404 `invalid_args` "error 404/3603: no_such_ask ..." or 410 `no_such_ask`
        # (§1.3). On the accept-ask endpoint both statuses mean exactly that, whatever the prose says.
        return OfferGoneError(text, **kw)
    if code == "no_such_ask":
        return OfferGoneError(text, **kw)
    return ProviderError(text, **kw)


def _retry_after(resp: http.HttpResponse) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP-date; backoff alone will do


class VastClient:
    """Thin, typed-error wrapper over Vast's REST API. Every public method is retried per `retry.py`."""

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str | None = None,
        call: retry.CallPolicy | None = None,
        **overrides: Any,
    ):
        self.base_url = base_url_from_env(base_url)
        self._key = api_key
        self.call = retry.CallPolicy.of(call, **overrides)
        # One keep-alive session for every call of this client (a submit polls the same host for minutes).
        self._http = http.HttpSession(timeout=self.call.timeout, secrets=(api_key,))

    def __repr__(self) -> str:  # never show the key
        return f"VastClient(base_url={self.base_url!r})"

    # -- plumbing -------------------------------------------------------------------------------------------
    def _secrets(self) -> tuple[str, ...]:
        return (self._key,) if self._key else ()

    def _send(
        self, method: str, path: str, *, body: Any = None, query: dict | None = None, auth: bool = True
    ) -> http.HttpResponse:
        headers = {"Authorization": f"Bearer {self._key}"} if auth and self._key else {}
        return self._http.request(method, self.base_url + path, json_body=body, headers=headers, query=query)

    def _json_ok(self, method: str, path: str, **kw) -> Any:
        resp = self._send(method, path, **kw)
        if not 200 <= resp.status < 300:
            raise error_for(resp, path, self._secrets())
        return resp.json()

    def _retry(
        self,
        fn: Callable[[], Any],
        what: str,
        *,
        policy: retry.RetryPolicy | None = None,
        retry_if: Callable[[ProviderError], bool] | None = None,
    ) -> Any:
        return retry.call(
            policy or self.call.policy,
            fn,
            sleep=self.call.sleep,
            clock=self.call.clock,
            retry_if=retry_if,
            what=f"vastai {what}",
        )

    # -- endpoints ------------------------------------------------------------------------------------------
    def search_offers(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """`POST /api/v0/bundles/` (§1.2). Works without a key, so it is sent only when we have one."""
        body = self._retry(
            lambda: self._json_ok("POST", "/api/v0/bundles/", body=query, auth=bool(self._key)), "search offers"
        )
        offers = body.get("offers") if isinstance(body, dict) else None
        if not isinstance(offers, list):
            raise ProviderError("Vast.ai /bundles/ answered without an offers list", provider=PROVIDER)
        return [o for o in offers if isinstance(o, dict)]

    def create_instance(self, ask_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """`PUT /api/v0/asks/{id}/` (§1.3) → the success body (`new_contract`, `instance_api_key`).

        Raises CreateFailed whenever the answer carries a `new_contract` but is not a success: a failed bid
        still leaves an instance that may bill (§1.3 "Interruptible gotcha"). Only 429s are retried: after a
        5xx or a dropped connection the machine may be rented already, and a second PUT would rent another.
        """
        path = f"/api/v0/asks/{ask_id}/"

        def once() -> dict[str, Any]:
            resp = self._send("PUT", path, body=body)
            data = resp.json()
            contract = data.get("new_contract") if isinstance(data, dict) else None
            ok = 200 <= resp.status < 300 and isinstance(data, dict) and data.get("success") is not False
            if ok and contract is not None:
                return data
            if contract is not None:
                code, msg = _fields(data)
                raise CreateFailed(
                    http.redact(
                        f"Vast.ai create on ask {ask_id} failed ({resp.status} {code}: "
                        f"{msg}) but returned instance {contract}",
                        self._secrets(),
                    ),
                    instance_id=str(contract),
                    provider=PROVIDER,
                    status=resp.status,
                )
            if ok:  # 2xx without an id: nothing to record, nothing we can manage
                raise ProviderError(
                    f"Vast.ai create on ask {ask_id} answered without new_contract",
                    provider=PROVIDER,
                    status=resp.status,
                )
            raise error_for(resp, path, self._secrets())

        return self._retry(once, "create", retry_if=lambda e: isinstance(e, RateLimitError))

    def attach_ssh_key(self, instance_id: str, public_key: str) -> None:
        """`POST /api/v0/instances/{id}/ssh/` (§1.4): the per-job key, on this instance only."""
        path = f"/api/v0/instances/{instance_id}/ssh/"
        body = self._retry(lambda: self._json_ok("POST", path, body={"ssh_key": public_key}), "attach ssh key")
        if isinstance(body, dict) and body.get("success") is False:
            code, msg = _fields(body)
            raise ProviderError(f"Vast.ai refused the SSH key for {instance_id}: {code} {msg}", provider=PROVIDER)

    def show_instance(self, instance_id: str) -> dict[str, Any] | None:
        """`GET /api/v0/instances/{id}/` (§1.4) → the instance dict, or None once Vast no longer knows it
        (`{"instances": null}` with 200; older servers answered 404)."""
        path = f"/api/v0/instances/{instance_id}/"

        def once() -> dict[str, Any] | None:
            resp = self._send("GET", path, query={"owner": "me"})
            if resp.status == 404:
                code, _ = _fields(resp.json())
                if not code or code in GONE_INSTANCE_CODES:
                    return None
            if not 200 <= resp.status < 300:
                raise error_for(resp, path, self._secrets())
            data = resp.json()
            if not isinstance(data, dict):
                raise ProviderError(f"Vast.ai GET {path}: body is not JSON", provider=PROVIDER, status=resp.status)
            inst = data.get("instances")
            return inst if isinstance(inst, dict) else None

        return self._retry(once, "show instance")

    def destroy_instance(self, instance_id: str) -> None:
        """`DELETE /api/v0/instances/{id}/` (§1.5). Unknown id (`not_found`/`no_such_instance`/404) = done."""
        path = f"/api/v0/instances/{instance_id}/"

        def once() -> None:
            resp = self._send("DELETE", path, body={})
            body = resp.json()
            code, msg = _fields(body)
            if resp.status == 404 or code in GONE_INSTANCE_CODES:
                return
            if 200 <= resp.status < 300:
                if isinstance(body, dict) and body.get("success") is False:
                    # A 2xx that says it did not destroy (Vast's error shape can come with any status,
                    # vast-ai/docs `rate-limits-and-errors.mdx`): billing goes on, so it is retried like a 5xx
                    # under the destroy policy, and the caller still confirms through get().
                    raise TransientError(
                        http.redact(
                            f"Vast.ai {resp.status} on DELETE {path} with success=false: {code} {msg}".strip(),
                            self._secrets(),
                        ),
                        provider=PROVIDER,
                        status=resp.status,
                    )
                return
            raise error_for(resp, path, self._secrets())

        self._retry(once, "destroy", policy=self.call.destroy_policy)

    def list_instances(self, select_filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """`GET /api/v1/instances/` (§1.6), following `next_token` through every page of at most 25."""
        instances: list[dict[str, Any]] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            query = {"limit": "25"}
            if select_filters:
                query["select_filters"] = json.dumps(select_filters)
            if token:
                query["after_token"] = token
            page = self._retry(
                functools.partial(self._json_ok, "GET", "/api/v1/instances/", query=query), "list instances"
            )
            if not isinstance(page, dict):
                raise ProviderError("Vast.ai /api/v1/instances/: body is not JSON", provider=PROVIDER)
            instances += [i for i in (page.get("instances") or []) if isinstance(i, dict)]
            token = page.get("next_token") or None
            if token is None or token in seen:  # a repeated token would loop forever
                return instances
            seen.add(token)
