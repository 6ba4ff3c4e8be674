"""Every HTTP call lorarun makes to RunPod: REST v2 for pods, GraphQL for GPU prices (providers.md §2.0).

REST v2 answers errors as RFC 9457 problem+json and decides by status (§2.3, §2.9). GraphQL answers HTTP 200
even for errors, with an `errors` list (§2.9); we only use it for the public `gpuTypes` price query.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from typing import Any

from lorarun.provider_adapters import http, retry
from lorarun.provider_adapters.errors import (
    AuthError,
    InsufficientFundsError,
    NoCapacityError,
    PoolDeniedError,
    ProviderError,
    RateLimitError,
    TransientError,
)

PROVIDER = "runpod"
DEFAULT_REST_URL = "https://api.runpod.io"  # REST v2 lives under /v2 on this host (§2.0)
DEFAULT_GRAPHQL_URL = "https://api.runpod.io/graphql"

GPU_TYPES_QUERY = """
query GpuTypes($lowestPriceInput: GpuLowestPriceInput, $gpuTypesInput: GpuTypeFilter) {
  gpuTypes(input: $gpuTypesInput) {
    id displayName memoryInGb maxGpuCount secureCloud communityCloud securePrice communityPrice
    lowestPrice(input: $lowestPriceInput) {
      uninterruptablePrice minimumBidPrice stockStatus availableGpuCounts countryCode
    }
  }
}
""".strip()

DEPLOY_MUTATION = """
mutation createPod($input: PodFindAndDeployOnDemandInput!) {
  podFindAndDeployOnDemand(input: $input) {
    id imageName machineId desiredStatus costPerHr lastStatusChange machine { podHostId }
  }
}
""".strip()

# Spot pods: the same input plus `bidPerGpu`, through `podRentInterruptable` (dstackai/dstack
# `backends/runpod/api_client.py::generate_pod_deployment_mutation` picks this mutation whenever bid_per_gpu is set;
# skypilot-org/skypilot `sky/provision/runpod/api/pods.py`; providers.md §2.3 "GraphQL podRentInterruptable").
SPOT_MUTATION = """
mutation rentSpot($input: PodRentInterruptableInput!) {
  podRentInterruptable(input: $input) {
    id imageName machineId desiredStatus costPerHr lastStatusChange machine { podHostId }
  }
}
""".strip()

# GraphQL `extensions.code` values that mean the key is bad (standard Apollo codes). RunPod's own errors carry
# the generic code "RUNPOD" (§2.9), so everything else is a plain ProviderError with RunPod's message.
_GQL_AUTH_CODES = frozenset({"UNAUTHENTICATED", "FORBIDDEN"})


# lorarun's own variables. `RUNPOD_API_URL` is runpodctl's, and holds a v1 base URL (`https://rest.runpod.io/v1`,
# runpod/runpodctl `internal/api/client.go`): appending `/v2/pods` to a user's v1 URL would call a route that does
# not exist, so it is deliberately not read here.
REST_URL_ENV = "LORARUN_RUNPOD_URL"
GRAPHQL_URL_ENV = "LORARUN_RUNPOD_GRAPHQL_URL"


def rest_url_from_env(url: str | None = None) -> str:
    """Constructor argument, else `LORARUN_RUNPOD_URL`, else the public host; a trailing `/v2` is tolerated."""
    base = (url or os.environ.get(REST_URL_ENV) or DEFAULT_REST_URL).rstrip("/")
    return base[: -len("/v2")] if base.endswith("/v2") else base


def graphql_url_from_env(url: str | None = None) -> str:
    return (url or os.environ.get(GRAPHQL_URL_ENV) or DEFAULT_GRAPHQL_URL).rstrip("/")


def rest_error(
    resp: http.HttpResponse, where: str, secrets: tuple[str, ...] = (), *, creating: bool = False
) -> ProviderError:
    """The typed error for a non-2xx REST v2 answer, by status (§2.3 createPod table, §2.9)."""
    body = resp.json()
    status = resp.status
    detail = ""
    if isinstance(body, dict):
        detail = str(body.get("detail") or body.get("title") or body.get("message") or "")
        if isinstance(body.get("errors"), list):  # 422 validation messages
            detail += " " + "; ".join(str(e) for e in body["errors"])
    detail = detail.strip() or resp.text(200)
    text = http.redact(f"RunPod {status} on {where}: {detail}", secrets)
    kw: dict[str, Any] = {"provider": PROVIDER, "status": status}
    if status == 429:
        return RateLimitError(text, retry_after=_retry_after(resp), **kw)
    if status >= 500:
        return TransientError(text, **kw)
    if status == 403 and creating:
        # createPod's 403: "Your account cannot access the requested pool. Skip this candidate, keep going."
        # (runpod/docs `api-reference-v2/openapi.json` createPod): one GPU type, not the whole submit.
        return PoolDeniedError(text, **kw)
    if status in (401, 403):
        return AuthError(text, **kw)
    if status == 402:
        return InsufficientFundsError(text, **kw)
    if status == 400 and creating:
        # createPod: 400 is "rule violation or no capacity — try the next candidate"; capacity has no
        # machine-readable code, only prose in `detail` (§2.3). The status is all we may decide on.
        return NoCapacityError(text, **kw)
    return ProviderError(text, **kw)  # 400 elsewhere, 404, 409 (cluster pod / invalid action), 422 (contract)


def _retry_after(resp: http.HttpResponse) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return float(value) if value is not None else None  # integer seconds on RunPod (§2.9)
    except ValueError:
        return None


class RunPodClient:
    def __init__(
        self,
        api_key: str | None,
        *,
        rest_url: str | None = None,
        graphql_url: str | None = None,
        call: retry.CallPolicy | None = None,
        **overrides: Any,
    ):
        self.rest_url = rest_url_from_env(rest_url)
        self.graphql_url = graphql_url_from_env(graphql_url)
        self._key = api_key
        self.call = retry.CallPolicy.of(call, **overrides)
        self._http = http.HttpSession(timeout=self.call.timeout, secrets=(api_key,))  # keep-alive, both hosts

    def __repr__(self) -> str:
        return f"RunPodClient(rest_url={self.rest_url!r}, graphql_url={self.graphql_url!r})"

    def _secrets(self) -> tuple[str, ...]:
        return (self._key,) if self._key else ()

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
            what=f"runpod {what}",
        )

    def _rest(self, method: str, path: str, body: Any = None) -> http.HttpResponse:
        if not self._key:
            raise AuthError("RunPod API key missing", provider=PROVIDER)
        return self._http.request(
            method, self.rest_url + path, json_body=body, headers={"Authorization": f"Bearer {self._key}"}
        )

    # -- GraphQL: prices ------------------------------------------------------------------------------------
    def gpu_types(self, gpu_count: int, secure_cloud: bool) -> list[dict[str, Any]]:
        """`gpuTypes` with `lowestPrice` for one cloud (§2.2). A public discovery query: sent without the key,
        so the key never travels where it is not needed and offers work before the user has one."""
        variables = {"lowestPriceInput": {"gpuCount": gpu_count, "secureCloud": secure_cloud}}

        def once() -> list[dict[str, Any]]:
            resp = self._http.request(
                "POST", self.graphql_url, json_body={"query": GPU_TYPES_QUERY, "variables": variables}
            )
            data = self._graphql_data(resp, "gpuTypes")
            types = data.get("gpuTypes") if isinstance(data, dict) else None
            return [t for t in types or [] if isinstance(t, dict)]

        return self._retry(once, "gpu types")

    def _graphql_data(self, resp: http.HttpResponse, op: str) -> Any:
        kw: dict[str, Any] = {"provider": PROVIDER, "status": resp.status}
        if resp.status != 200:
            # 401 for a bad key (§2.9); 429/5xx shapes are UNCONFIRMED for GraphQL, mapped like REST.
            raise rest_error(resp, f"graphql {op}", self._secrets())
        body = resp.json()
        if not isinstance(body, dict):
            raise ProviderError(f"RunPod graphql {op}: body is not JSON", **kw)
        errors = body.get("errors")
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {}
            code = str((first.get("extensions") or {}).get("code") or "")
            text = http.redact(f"RunPod graphql {op}: {first.get('message') or errors!r} [{code}]", self._secrets())
            if code in _GQL_AUTH_CODES:
                raise AuthError(text, **kw)
            err = ProviderError(text, **kw)
            err.gql_code = code  # type: ignore[attr-defined]
            raise err
        return body.get("data")

    # -- REST v2: pods --------------------------------------------------------------------------------------
    def create_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /v2/pods` → 201 with the Pod (§2.3). Only 429s are retried: after a 5xx or a dropped connection
        the pod may exist already, and a second POST would rent a second one."""

        def once() -> dict[str, Any]:
            resp = self._rest("POST", "/v2/pods", body)
            if resp.status not in (200, 201):
                raise rest_error(resp, "POST /v2/pods", self._secrets(), creating=True)
            pod = resp.json()
            if not isinstance(pod, dict) or not pod.get("id"):
                raise ProviderError("RunPod create answered without a pod id", provider=PROVIDER, status=resp.status)
            return pod

        return self._retry(once, "create pod", retry_if=lambda e: isinstance(e, RateLimitError))

    def get_pod(self, pod_id: str) -> dict[str, Any] | None:
        """`GET /v2/pods/{id}` → the Pod, or None on 404 (§2.4)."""
        path = f"/v2/pods/{pod_id}"

        def once() -> dict[str, Any] | None:
            resp = self._rest("GET", path)
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise rest_error(resp, f"GET {path}", self._secrets())
            pod = resp.json()
            if not isinstance(pod, dict):
                raise ProviderError(f"RunPod GET {path}: body is not JSON", provider=PROVIDER)
            return pod

        return self._retry(once, "get pod")

    def delete_pod(self, pod_id: str) -> None:
        """`DELETE /v2/pods/{id}` → 204; 404 means already gone (§2.5)."""
        path = f"/v2/pods/{pod_id}"

        def once() -> None:
            resp = self._rest("DELETE", path)
            if resp.status in (200, 202, 204, 404):
                return
            raise rest_error(resp, f"DELETE {path}", self._secrets())

        self._retry(once, "delete pod", policy=self.call.destroy_policy)

    # -- REST v2: registry credentials (private images) -----------------------------------------------------
    def create_registry_credential(self, name: str, username: str, password: str) -> str:
        """`POST /v2/registries` {name, username, password} → the credential's id, which a pod create names in
        `registry` (v2) or `containerRegistryAuthId` (GraphQL). Write-only: the password never comes back
        (runpod/docs `api-reference-v2/registries/create-a-container-registry-credential`; v1 had
        `POST /containerregistryauth`). Only 429s are retried, as for a pod create."""

        def once() -> str:
            resp = self._rest("POST", "/v2/registries", {"name": name, "username": username, "password": password})
            if resp.status not in (200, 201):
                raise rest_error(resp, "POST /v2/registries", self._secrets() + (password,))
            body = resp.json()
            if not isinstance(body, dict) or not body.get("id"):
                raise ProviderError(
                    "RunPod answered a registry credential without an id", provider=PROVIDER, status=resp.status
                )
            return str(body["id"])

        return self._retry(once, "create registry credential", retry_if=lambda e: isinstance(e, RateLimitError))

    def list_registry_credentials(self) -> list[dict[str, Any]]:
        """`GET /v2/registries` → [{id, name}] (runpod/docs `api-reference-v2/registries`)."""

        def once() -> list[dict[str, Any]]:
            resp = self._rest("GET", "/v2/registries")
            if resp.status != 200:
                raise rest_error(resp, "GET /v2/registries", self._secrets())
            body = resp.json()
            return [r for r in body if isinstance(r, dict)] if isinstance(body, list) else []

        return self._retry(once, "list registry credentials")

    def delete_registry_credential(self, credential_id: str) -> None:
        """`DELETE /v2/registries/{id}`; 404 means already gone."""
        path = f"/v2/registries/{credential_id}"

        def once() -> None:
            resp = self._rest("DELETE", path)
            if resp.status in (200, 202, 204, 404):
                return
            raise rest_error(resp, f"DELETE {path}", self._secrets())

        self._retry(once, "delete registry credential", policy=self.call.destroy_policy)

    def list_pods(self) -> list[dict[str, Any]]:
        """`GET /v2/pods` → `{"pods": [...]}` (v1 answered a bare list; accept both). No name filter (§2.6).

        Follows `pagination.nextCursor` (sent back as `?cursor=`) while the answer carries one. The v2 spec read
        (runpod/docs a900806e `api-reference-v2/openapi.json` ListPodsResponse) has no pagination yet; the issue
        tracker reports paginated list answers, so a cursor is followed when present. UNCONFIRMED: the query
        parameter's name. A repeated cursor ends the walk (it would loop forever)."""
        pods: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            path = "/v2/pods" + (f"?{urllib.parse.urlencode({'cursor': cursor})}" if cursor else "")

            def once(path: str = path) -> Any:
                resp = self._rest("GET", path)
                if resp.status != 200:
                    raise rest_error(resp, "GET /v2/pods", self._secrets())
                return resp.json()

            body = self._retry(once, "list pods")
            page = body.get("pods") if isinstance(body, dict) else body
            if not isinstance(page, list):
                raise ProviderError("RunPod GET /v2/pods: no pods list", provider=PROVIDER)
            pods += [p for p in page if isinstance(p, dict)]
            pagination = body.get("pagination") if isinstance(body, dict) else None
            cursor = pagination.get("nextCursor") if isinstance(pagination, dict) else None
            if not cursor or cursor in seen:
                return pods
            seen.add(cursor)

    # -- GraphQL: Community pods with a public IP -----------------------------------------------------------------
    def deploy_on_demand(self, pod_input: dict[str, Any], *, spot: bool = False) -> dict[str, Any]:
        """GraphQL `podFindAndDeployOnDemand` with typed variables, as runpodctl sends it (runpod/runpodctl
        `api/pod.go`; fields: runpod/runpod-python `api/mutations/pods.py`, dstackai/dstack
        `backends/runpod/api_client.py::generate_pod_deployment_mutation`). Used for COMMUNITY pods because only
        this input has `supportPublicIp` (REST v2 createPod has no such field: runpod/docs
        `api-reference-v2/openapi.json` CreatePodRequest), and without a public IP `ssh.direct` stays null.

        GraphQL answers HTTP 200 with an `errors` list (providers.md §2.9); every documented error of this
        mutation is a capacity one ("There are no longer any instances available…", code "RUNPOD"), so any
        non-auth error means "try the next offer". Only 429s are retried (a 5xx may have created the pod).
        `spot`: `podRentInterruptable` with `bidPerGpu` in the input (SPOT_MUTATION), answered the same way."""
        op, mutation = (
            ("podRentInterruptable", SPOT_MUTATION) if spot else ("podFindAndDeployOnDemand", DEPLOY_MUTATION)
        )
        if not self._key:
            raise AuthError("RunPod API key missing", provider=PROVIDER)

        def once() -> dict[str, Any]:
            resp = self._http.request(
                "POST",
                self.graphql_url,
                json_body={"query": mutation, "variables": {"input": pod_input}},
                headers={"Authorization": f"Bearer {self._key}"},
            )
            try:
                data = self._graphql_data(resp, op)
            except ProviderError as err:
                # RunPod's own errors carry extensions.code "RUNPOD" (providers.md §2.9); schema errors carry
                # GraphQL's codes (GRAPHQL_VALIDATION_FAILED, BAD_USER_INPUT) and are our mistake: fatal.
                if type(err) is ProviderError and resp.status == 200 and getattr(err, "gql_code", "") in ("", "RUNPOD"):
                    raise NoCapacityError(str(err), provider=PROVIDER, status=resp.status) from None
                raise
            pod = data.get(op) if isinstance(data, dict) else None
            if not isinstance(pod, dict) or not pod.get("id"):
                raise ProviderError(f"RunPod {op} answered without a pod id", provider=PROVIDER)
            return pod

        return self._retry(once, "deploy pod", retry_if=lambda e: isinstance(e, RateLimitError))
