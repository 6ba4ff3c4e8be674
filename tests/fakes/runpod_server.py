"""A fake RunPod API over real HTTP, faithful to /work/shared/reference/providers.md §2.

Surface (§2.10): `POST /graphql` (gpuTypes with lowestPrice, myself, podTerminate; HTTP 200 with `errors` for
GraphQL errors, 401 for a bad key) and REST v2 `POST|GET /v2/pods`, `GET|DELETE /v2/pods/{id}`,
`POST /v2/pods/{id}/action`, with problem+json errors, RateLimit headers and Retry-After on 429.

Lifecycle: PROVISIONING → STARTING → RUNNING over `boot_polls` GETs (0: RUNNING at once). On turning RUNNING,
`on_create(pod_id, env, public_key)` may return the (host, port) of a real sshd, reported as `ssh.direct` and
in `runtime.ports` (`env` carries RUNPOD_POD_ID and the pod-scoped RUNPOD_API_KEY, as RunPod injects them).
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._server import FakeAPI, Reply, Request

API_KEY = "rpa_TESTKEY0123456789ABCDEFGHIJ"
PROBLEM = "application/problem+json"
# Top-level properties of v2's CreatePodRequest: its own (name, cloud, cpu, dataCenterIds, globalNetworking, gpu,
# mounts, startJupyter, startSsh, templateId) plus ContainerConfig's (registry) and BaseContainerConfig's (args,
# disk, env, image, ports) — runpod/docs a900806e `api-reference-v2/openapi.json` components.schemas. Anything else
# (v1's countryCodes, locked, containerRegistryAuthId …) is a 422: `unevaluatedProperties: false`.
CREATE_PROPS = {
    "name",
    "cloud",
    "cpu",
    "dataCenterIds",
    "globalNetworking",
    "gpu",
    "mounts",
    "startJupyter",
    "startSsh",
    "templateId",
    "registry",
    "args",
    "disk",
    "env",
    "image",
    "ports",
}
# CreateGpuConfig = GpuConfig {id, count} + {allowedCudaVersions, minCudaVersion}, unevaluatedProperties false.
GPU_PROPS = {"id", "count", "minCudaVersion", "allowedCudaVersions"}
# GraphQL PodFindAndDeployOnDemandInput fields lorarun and the sources use (runpod/runpod-python
# `api/mutations/pods.py`, runpod/runpodctl `api/pod.go`, dstackai/dstack `runpod/api_client.py`); the real
# schema has more, an unknown one is a GRAPHQL_VALIDATION_FAILED error.
DEPLOY_INPUT = {
    "cloudType",
    "gpuTypeId",
    "gpuCount",
    "name",
    "imageName",
    "containerDiskInGb",
    "volumeInGb",
    "volumeMountPath",
    "ports",
    "env",
    "dockerArgs",
    "startSsh",
    "startJupyter",
    "supportPublicIp",
    "minVcpuCount",
    "minMemoryInGb",
    "dataCenterId",
    "countryCode",
    "networkVolumeId",
    "templateId",
    "allowedCudaVersions",
    "minCudaVersion",
    "minDownload",
    "minUpload",
    "containerRegistryAuthId",
    "deployCost",
}
NO_CAPACITY = (
    "There are no longer any instances available with the requested specifications. Please refresh and try again."
)

OnCreate = Callable[[str, dict, str], "tuple[str, int]"]
OnDestroy = Callable[[str], None]


def default_gpu_types() -> list[dict[str, Any]]:
    def gpu(gid, name, mem, secure, community, max_count=8, country="US"):
        return {
            "id": gid,
            "displayName": name,
            "memoryInGb": mem,
            "maxGpuCount": max_count,
            "secureCloud": secure is not None,
            "communityCloud": community is not None,
            "securePrice": secure,
            "communityPrice": community,
            "secureSpotPrice": None,
            "communitySpotPrice": None,
            "countryCode": country,
        }

    return [
        gpu("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69, 0.34),
        gpu("NVIDIA GeForce RTX 3090", "RTX 3090", 24, 0.43, 0.22, country="CA"),
        gpu("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64, 1.19),
        gpu("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.99, None),
        gpu("NVIDIA RTX A6000", "RTX A6000", 48, 0.76, 0.49, max_count=4, country="CZ"),
    ]


@dataclass
class FakePod:
    id: str
    name: str
    image: str
    gpu_id: str
    gpu_count: int
    cloud: str
    disk: int
    ports: list[str]
    env: dict[str, str]
    cost: float
    pod_key: str
    status: str = "PROVISIONING"
    polls: int = 0
    host: str = ""
    port: int = 0
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    started_at: str | None = None
    args: str = ""
    registry: str | None = None  # the registry credential id the image is pulled with (private images)
    public_ip: bool = True  # Secure Cloud always; Community only when asked (supportPublicIp) or by luck
    spot: bool = False  # rented with podRentInterruptable: RunPod may take it back (`interrupt`)
    interrupted_at: float | None = None  # the fake's clock when it was taken back


def spot_floor(price: float) -> float:
    """`lowestPrice.minimumBidPrice` of a GPU type: a spot pod's floor, about 60% of the on-demand price here."""
    return round(price * 0.6, 3)


def problem(status: int, detail: str, **extra: Any) -> Reply:
    titles = {
        400: "Bad Request",
        401: "Unauthorized",
        402: "Payment Required",
        403: "Forbidden",
        404: "Not Found",
        409: "Conflict",
        422: "Unprocessable Entity",
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }
    return Reply(
        status,
        {"title": titles.get(status, "Error"), "status": status, "detail": detail, **extra},
        content_type=PROBLEM,
    )


class FakeRunPod(FakeAPI):
    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        gpu_types: list[dict] | None = None,
        boot_polls: int = 2,
        on_create: OnCreate | None = None,
        on_destroy: OnDestroy | None = None,
        balance: float = 50.0,
        community_public_ip: bool = False,
        pod_key_v2: bool = False,
        pod_key_graphql: bool = True,
        page_size: int | None = None,
        support_public_ip_honoured: bool = True,
    ):
        super().__init__()
        self.api_key = api_key
        self.gpu_types = {g["id"]: g for g in (gpu_types or default_gpu_types())}
        # Free GPUs per (gpu id, cloud); a create takes them, a delete gives them back.
        self.capacity: dict[tuple[str, str], int] = {
            (g["id"], c): 8
            for g in self.gpu_types.values()
            for c in ("SECURE", "COMMUNITY")
            if g["securePrice" if c == "SECURE" else "communityPrice"] is not None
        }
        self.pods: dict[str, FakePod] = {}
        self.boot_polls = boot_polls
        self.on_create = on_create
        self.on_destroy = on_destroy
        self.balance = balance
        # Community pods without a public IP unless asked for one: "If the created Pod is on Community Cloud, set
        # to true if you need the Pod to expose a public IP address. If null, the Pod might not have a public IP
        # address. On Secure Cloud, the Pod will always have a public IP address." (runpod/docs
        # `api-reference/openapi.json` PodCreateInput.supportPublicIp). v2 cannot ask (no such field), GraphQL can.
        self.community_public_ip = community_public_ip
        # False: a Community host without a public IP takes the pod anyway (what lorarun must survive).
        self.support_public_ip_honoured = support_public_ip_honoured
        # GET /v2/pods answers `pagination.nextCursor` pages of this size (None: one page, as the v2 spec read has
        # it). UNCONFIRMED: the shape is issue #10's report; the cursor comes back as `?cursor=`.
        self.page_size = page_size
        # (gpu id, cloud) pools this account may not use: createPod 403 "access denied" (v2 createPod: "Your
        # account cannot access the requested pool. Skip this candidate").
        self.forbidden: set[tuple[str, str]] = set()
        # The pod-scoped RUNPOD_API_KEY: whether REST v2 accepts it is undocumented (providers.md §2.7
        # UNCONFIRMED), so the fake refuses it there by default (403 "access denied", the v2 ForbiddenError
        # example in runpod/docs `api-reference-v2/openapi.json`). GraphQL takes it for its own pod: that is what
        # the pod's runpodctl sends (runpod/runpodctl `api/pod.go::RemovePod` → podTerminate; runpod/docs commit
        # 60caf0ed: the pod's runpodctl key "is scoped to that pod").
        self.pod_key_v2 = pod_key_v2
        self.pod_key_graphql = pod_key_graphql
        # Registry credentials (REST v2 `/v2/registries`, runpod/docs `api-reference-v2/registries/
        # create-a-container-registry-credential`): write-only, so the fake keeps the password only to let tests
        # check what was stored; answers carry id and name alone.
        self.registries: dict[str, dict[str, str]] = {}
        self.destroyed: list[str] = []
        self._terminating: dict[str, str] = {}  # pods deleted, not yet seen gone → their registry credential
        self.interrupted: dict[str, float] = {}  # spot pods taken back → the fake's clock then (`interrupt`)
        self.clock = time.time  # the fake's clock: tests may inject one
        # The newest CUDA its hosts' drivers run (pods report it as `cudaVersion`). A create asking more
        # (`minCudaVersion`) finds no host: RunPod answers as for no capacity (the filter only narrows the hosts
        # it picks from, runpod/docs `api-reference-v2/openapi.json` CreateGpuConfig.minCudaVersion).
        self.host_cuda = 12.8
        self.spent_pod_keys: list[str] = []  # keys of terminated pods (a key outlives its pod only as a token)
        self._ports = itertools.count(40000)

    # -- test controls -------------------------------------------------------------------------------------
    def set_capacity(self, gpu_id: str, cloud: str, free: int) -> None:
        with self.lock:
            self.capacity[(gpu_id, cloud)] = free

    def vanish(self, pod_id: str, *, run_on_destroy: bool = False) -> None:
        """The pod disappears without a DELETE (on_destroy only if asked, to stop its sshd)."""
        with self.lock:
            gone = self.pods.pop(pod_id, None)
        if gone is not None and run_on_destroy and self.on_destroy is not None:
            self.on_destroy(pod_id)

    def run_now(self, pod_id: str) -> None:
        with self.lock:
            self._become_running(self.pods[pod_id])

    def set_status(self, pod_id: str, status: str) -> None:
        with self.lock:
            pod = self.pods[pod_id]
            pod.status, pod.polls = status, 10**6

    def _too_new(self, asked: dict) -> bool:
        try:
            return float(asked.get("minCudaVersion") or 0) > self.host_cuda
        except (TypeError, ValueError):
            return False

    def interrupt(self, pod_id: str, *, gone: bool = False) -> None:
        """RunPod takes a spot pod back: "stopped with only a 5-second warning (SIGTERM, then SIGKILL)" (RunPod's
        removed spot docs, providers.md §2.8) — the pod shows EXITED, its container (our sshd) is gone. `gone`:
        the pod disappears from the API as well (404), which lorarun must read as an interruption too."""
        with self.lock:
            pod = self.pods[pod_id]
            assert pod.spot, "only spot pods are interrupted"
            pod.status, pod.polls, pod.interrupted_at = "EXITED", 10**6, self.clock()
            if gone:
                self.pods.pop(pod_id)
                self.capacity[(pod.gpu_id, pod.cloud)] = self.capacity.get((pod.gpu_id, pod.cloud), 0) + pod.gpu_count
            self.interrupted[pod_id] = pod.interrupted_at
        if self.on_destroy is not None:
            self.on_destroy(pod_id)  # the container stops: its sshd and processes end; the pod record stays

    def live_ids(self) -> list[str]:
        with self.lock:
            return list(self.pods)

    def default_error(self, status: int) -> Reply:
        if status == 429:
            reply = problem(429, "rate limit exceeded for the minute window")
            reply.headers["Retry-After"] = "2"
            return reply
        return problem(status, {401: "missing bearer token", 404: "resource not found"}.get(status, "injected fault"))

    # -- routing -------------------------------------------------------------------------------------------
    def route(self, req: Request) -> Reply:
        if req.path.rstrip("/") == "/graphql" and req.method == "POST":
            return self._graphql(req)
        parts = req.path.rstrip("/").split("/")[1:]
        if parts[:2] == ["v2", "registries"]:
            if req.token() != self.api_key:  # account-level: a pod-scoped key never reaches credentials
                return problem(401 if req.token() is None else 403, "access denied")
            return self._registries(req, parts[2] if len(parts) == 3 else None)
        if parts[:2] != ["v2", "pods"]:
            return problem(404, "resource not found")
        token = req.token()
        pod = self.pods.get(parts[2]) if len(parts) >= 3 else None
        pod_key_ok = (
            self.pod_key_v2
            and pod is not None
            and token == pod.pod_key
            and len(parts) == 3
            and req.method in ("DELETE", "GET")
        )
        if token is None:
            return problem(401, "missing bearer token")
        if token != self.api_key and not pod_key_ok:
            if any(token == p.pod_key for p in self.pods.values()):
                return problem(403, "access denied")  # a pod-scoped key reaches only its own pod
            return problem(401, "invalid api key")
        if len(parts) == 2:
            if req.method == "POST":
                return self._with_limits(self._create(req))
            if req.method == "GET":
                return self._with_limits(self._list(req))
        if len(parts) == 3:
            if req.method == "GET":
                return self._with_limits(self._get(parts[2]))
            if req.method == "DELETE":
                return self._delete(parts[2])
        if len(parts) == 4 and parts[3] == "action" and req.method == "POST":
            return self._action(req, parts[2])
        return problem(405, "method not allowed")

    @staticmethod
    def _with_limits(reply: Reply) -> Reply:
        # Rate-limit headers on authenticated answers (§2.9); clients must not need them.
        reply.headers.setdefault("RateLimit", '"minute";r=59;t=60, "hour";r=2999;t=3600, "day";r=49999;t=86400')
        reply.headers.setdefault("RateLimit-Policy", '"minute";q=60;w=60, "hour";q=3000;w=3600, "day";q=50000;w=86400')
        return reply

    # -- REST v2 registry credentials -------------------------------------------------------------------------
    def _registries(self, req: Request, credential_id: str | None) -> Reply:
        with self.lock:
            if credential_id is None and req.method == "POST":
                body = req.json()
                fields = ("name", "username", "password")
                if not isinstance(body, dict) or not all(isinstance(body.get(f), str) and body[f] for f in fields):
                    return problem(
                        422, "Request validation failed.", errors=["$: name, username and password are required"]
                    )
                if any(r["name"] == body["name"] for r in self.registries.values()):
                    return problem(409, "a registry credential with this name exists")
                new_id = "reg_" + secrets.token_hex(6)
                self.registries[new_id] = {f: body[f] for f in fields}
                return Reply(200, {"id": new_id, "name": body["name"]})
            if credential_id is None and req.method == "GET":
                return Reply(200, [{"id": k, "name": v["name"]} for k, v in self.registries.items()])
            if credential_id is not None and req.method == "DELETE":
                # A credential a pod still uses cannot be deleted: 400 "in use" while the pod exists (the source
                # audit of issue 18; wording UNCONFIRMED). A terminated pod counts until it has been seen gone
                # (GET → 404): RunPod's terminate takes a moment, modelled as "until confirmed".
                users = [p.id for p in self.pods.values() if p.registry == credential_id]
                users += [pid for pid, reg in self._terminating.items() if reg == credential_id]
                if users and credential_id in self.registries:
                    return problem(400, f"registry credential {credential_id} is in use by pod {users[0]}")
                return Reply(204, None) if self.registries.pop(credential_id, None) else problem(404, "not found")
        return problem(405, "method not allowed")

    # -- REST v2 pods (§2.3-§2.6) ---------------------------------------------------------------------------
    def _list(self, req: Request) -> Reply:
        with self.lock:
            rows = [self._view(p) for p in self.pods.values()]
        if self.page_size is None:
            return Reply(200, {"pods": rows})
        try:
            start = int(req.query.get("cursor") or 0)
        except ValueError:
            return problem(400, "invalid cursor")
        end = start + self.page_size
        return Reply(
            200, {"pods": rows[start:end], "pagination": {"nextCursor": str(end) if end < len(rows) else None}}
        )

    def _create(self, req: Request) -> Reply:
        body = req.json()
        if not isinstance(body, dict):
            return problem(400, "request body is not valid JSON")
        unknown = sorted(set(body) - CREATE_PROPS)
        if unknown:
            return problem(
                422,
                "Request validation failed.",
                errors=[f"$: additional properties {', '.join(repr(u) for u in unknown)} not allowed"],
            )
        errors = []
        if not isinstance(body.get("name"), str) or not body["name"]:
            errors.append("$.name: required")
        if ("gpu" in body) == ("cpu" in body):
            errors.append("$: exactly one of gpu or cpu is required")
        if not body.get("image") and not body.get("templateId"):
            errors.append("$.image: required unless templateId is set")
        if body.get("cloud", "SECURE") not in ("SECURE", "COMMUNITY"):
            errors.append("$.cloud: must be SECURE or COMMUNITY")
        if "ports" in body and not (isinstance(body["ports"], list) and all(isinstance(p, str) for p in body["ports"])):
            errors.append("$.ports: must be an array of strings")
        env = body.get("env", {})
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            errors.append("$.env: must be an object of strings")
        gpu = body.get("gpu")
        if gpu is not None and (not isinstance(gpu, dict) or set(gpu) - GPU_PROPS):
            errors.append("$.gpu: additional properties not allowed")
        if errors:
            return problem(422, "Request validation failed.", errors=errors)
        if "cpu" in body:
            return problem(400, "CPU pods are not offered by this fake")
        # `registry` names a credential id; whether an unknown id is refused is not documented: recorded as given.
        if "count" not in gpu:
            # RunPod's MCP found that a create without gpu.count fails with this misleading 400 (§2.3).
            return problem(400, "no instances available with the requested specifications")
        if "minCudaVersion" in gpu and "allowedCudaVersions" in gpu:
            return problem(400, "allowedCudaVersions and minCudaVersion cannot both be set")
        cloud = body.get("cloud", "SECURE")
        with self.lock:
            gtype = self.gpu_types.get(gpu.get("id"))
            if gtype is None:
                return problem(400, f"unknown gpu type {gpu.get('id')!r}")
            if (gtype["id"], cloud) in self.forbidden:
                return problem(403, "access denied")
            count = int(gpu["count"])
            price = gtype["securePrice" if cloud == "SECURE" else "communityPrice"]
            if price is None or self.capacity.get((gtype["id"], cloud), 0) < count or self._too_new(gpu):
                return problem(400, NO_CAPACITY)
            cost = round(price * count, 4)
            if self.balance < cost:  # on-demand needs an hour of credit (§2.8); 402 described in §2.3
                return problem(402, "insufficient balance to start this pod")
            pod = FakePod(
                id="".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(14)),
                name=body["name"],
                image=body.get("image") or "",
                gpu_id=gtype["id"],
                gpu_count=count,
                cloud=cloud,
                disk=int(body.get("disk") or 50),
                ports=list(body.get("ports") or []),
                env=dict(body.get("env") or {}),
                cost=cost,
                pod_key="rpa_pod_" + secrets.token_hex(16),
                args=str(body.get("args") or ""),
                registry=body.get("registry"),
                public_ip=cloud == "SECURE" or self.community_public_ip,
            )
            self.capacity[(gtype["id"], cloud)] -= count
            self.pods[pod.id] = pod
            if self.boot_polls <= 0:
                self._become_running(pod)
            return Reply(201, self._view(pod))

    def _public_ip(self, pod: FakePod) -> bool:
        return pod.public_ip

    def _become_running(self, pod: FakePod) -> None:
        if pod.status == "RUNNING":
            return
        pod.status = "RUNNING"
        pod.started_at = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        if self.on_create is not None:
            env = dict(pod.env, RUNPOD_POD_ID=pod.id, RUNPOD_API_KEY=pod.pod_key)
            pod.host, pod.port = self.on_create(pod.id, env, pod.env.get("PUBLIC_KEY", ""))
        else:
            pod.host, pod.port = "203.0.113.7", next(self._ports)

    def _advance(self, pod: FakePod) -> None:
        if pod.polls >= 10**6 or pod.status != "PROVISIONING" and pod.status != "STARTING":
            return
        pod.polls += 1
        if pod.polls >= self.boot_polls:
            self._become_running(pod)
        else:
            pod.status = "STARTING"

    def _view(self, pod: FakePod) -> dict[str, Any]:
        running = pod.status == "RUNNING"
        direct = None
        runtime = None
        if running:
            # PodRuntime: uptime (seconds), gpus, cpu, memory, ports (v2 spec; not GraphQL's uptimeInSeconds).
            runtime = {
                "uptime": 1,
                "gpus": [{"id": "GPU-0", "gpuUtilPercent": 0, "memoryUtilPercent": 0}],
                "cpu": {"percent": 1},
                "memory": {"percent": 3},
                "ports": [],
            }
            if "22/tcp" in pod.ports:
                public = self._public_ip(pod)
                runtime["ports"].append(
                    {"private": 22, "public": pod.port, "type": "tcp", "ip": pod.host if public else "100.65.0.12"}
                )
                if public:  # ssh.direct only with 22/tcp exposed and a public IP (§2.4)
                    direct = {
                        "host": pod.host,
                        "port": pod.port,
                        "username": "root",
                        "command": f"ssh root@{pod.host} -p {pod.port}",
                    }
        actions = {
            "PROVISIONING": ["stop", "terminate"],
            "STARTING": ["stop", "terminate"],
            "RUNNING": ["stop", "restart", "terminate"],
            "EXITED": ["start", "terminate"],
            "ERROR": ["start", "terminate"],
        }.get(pod.status, [])
        # Every `required` property of v2's Pod schema; `gpu` is a GpuConfig: id and count only.
        return {
            "id": pod.id,
            "name": pod.name,
            "status": pod.status,
            "actions": actions,
            "image": pod.image,
            "args": pod.args,
            "disk": pod.disk,
            "mounts": {},
            "env": pod.env,
            "registry": pod.registry,
            "template": None,
            "gpu": {"id": pod.gpu_id, "count": pod.gpu_count},
            "cloud": pod.cloud,
            "dataCenterId": "US-KS-2",
            "cudaVersion": f"{self.host_cuda:.1f}",
            "ports": pod.ports,
            "ssh": {
                "proxy": {
                    "host": "ssh.runpod.io",
                    "port": 22,
                    "username": f"{pod.id}-64411eb2",
                    "command": f"ssh {pod.id}-64411eb2@ssh.runpod.io",
                },
                "direct": direct,
            },
            "cost": 0.0 if pod.status in ("EXITED", "TERMINATED") else pod.cost,
            "locked": False,
            "globalNetworking": {"enabled": False},
            "runtime": runtime,
            "createdAt": pod.created_at,
            "startedAt": pod.started_at,
        }

    def _get(self, pod_id: str) -> Reply:
        with self.lock:
            pod = self.pods.get(pod_id)
            if pod is None:
                self._terminating.pop(pod_id, None)  # seen gone: its registry credential is free
                return problem(404, "resource not found")
            view = self._view(pod)
            self._advance(pod)
        return Reply(200, view)

    def _delete(self, pod_id: str) -> Reply:
        with self.lock:
            pod = self.pods.pop(pod_id, None)
            if pod is None:
                return problem(404, "resource not found")
            self.capacity[(pod.gpu_id, pod.cloud)] = self.capacity.get((pod.gpu_id, pod.cloud), 0) + pod.gpu_count
            self.destroyed.append(pod_id)
            self.spent_pod_keys.append(pod.pod_key)
            if pod.registry:
                self._terminating[pod_id] = pod.registry
        if self.on_destroy is not None:
            self.on_destroy(pod_id)
        return Reply(204)

    def _action(self, req: Request, pod_id: str) -> Reply:
        body = req.json()
        action = body.get("action") if isinstance(body, dict) else None
        with self.lock:
            pod = self.pods.get(pod_id)
            if pod is None:
                return problem(404, "resource not found")
            if action not in self._view(pod)["actions"]:
                return problem(409, f"action {action!r} is not valid while the pod is {pod.status}")
            if action == "terminate":
                return self._delete(pod_id)
            if action == "stop":
                pod.status, pod.polls = "EXITED", 10**6
            elif action in ("start", "restart"):
                self._become_running(pod)
            return Reply(200, self._view(pod))

    # -- GraphQL (§2.2, §2.9) -------------------------------------------------------------------------------
    def _graphql(self, req: Request) -> Reply:
        body = req.json()
        token = req.token()
        with self.lock:
            own_pod = next((p.id for p in self.pods.values() if token is not None and token == p.pod_key), None)
            pod_key = own_pod is not None or any(token == k for k in self.spent_pod_keys)
        if token is not None and token != self.api_key and not (pod_key and self.pod_key_graphql):
            return Reply(401, "Unauthorized", content_type="text/plain")  # exact body UNCONFIRMED (§2.9)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return Reply(400, {"errors": [{"message": "Must provide query string."}]})
        query, variables = body["query"], body.get("variables") or {}
        if re.search(r"\bgpuTypes\b", query):
            return Reply(200, {"data": {"gpuTypes": self._gpu_types(query, variables)}})
        if token is None:  # everything but the public discovery queries needs the key (§2.1)
            return Reply(401, "Unauthorized", content_type="text/plain")
        if re.search(r"\bpodTerminate\b", query):
            m = re.search(r'podId:\s*"([^"]+)"', query)
            pod_id = m.group(1) if m else (variables.get("input") or {}).get("podId")
            with self.lock:
                known = pod_id in self.pods
                if token != self.api_key and known and self.pods[pod_id].pod_key != token:
                    known = False  # a pod key reaches only its own pod; RunPod does not say whose pod it is
            if not known:
                return Reply(
                    200,
                    {
                        "errors": [
                            {
                                "message": "pod not found to terminate",
                                "path": ["podTerminate"],
                                "extensions": {"code": "RUNPOD"},
                            }
                        ],
                        "data": {"podTerminate": None},
                    },
                )
            self._delete(pod_id)
            return Reply(200, {"data": {"podTerminate": None}})
        if re.search(r"\bpodFindAndDeployOnDemand\b", query):
            if token != self.api_key:
                return Reply(401, "Unauthorized", content_type="text/plain")
            return self._deploy(variables.get("input"))
        if re.search(r"\bpodRentInterruptable\b", query):
            # Spot: the on-demand input plus `bidPerGpu` (dstackai/dstack `runpod/api_client.py`
            # generate_pod_deployment_mutation; skypilot-org/skypilot `sky/provision/runpod/api/pods.py`).
            if token != self.api_key:
                return Reply(401, "Unauthorized", content_type="text/plain")
            return self._deploy(variables.get("input"), spot=True)
        if re.search(r"\bpod\s*\(", query):
            # `pod(input: {podId: "…"}) { … }` → the pod, or null when RunPod does not know it (dstack guards
            # for null: dstackai/dstack `runpod/compute.py`). Fields as GraphQL names them (RPPY queries/pods.py).
            m = re.search(r'podId:\s*"([^"]+)"', query)
            pod_id = m.group(1) if m else (variables.get("input") or {}).get("podId")
            with self.lock:
                pod = self.pods.get(pod_id)
                if pod is not None and token != self.api_key and pod.pod_key != token:
                    pod = None
                view = (
                    None
                    if pod is None
                    else {
                        "id": pod.id,
                        "name": pod.name,
                        "desiredStatus": "EXITED" if pod.status == "EXITED" else "RUNNING",
                        "costPerHr": pod.cost,
                        "imageName": pod.image,
                    }
                )
            return Reply(200, {"data": {"pod": view}})
        if pod_key and token != self.api_key:
            return Reply(
                200, {"errors": [{"message": "access denied", "extensions": {"code": "RUNPOD"}}], "data": None}
            )  # a pod key is for its own pod only
        if re.search(r"\bmyself\b", query):
            with self.lock:
                return Reply(
                    200,
                    {
                        "data": {
                            "myself": {
                                "id": "user_1",
                                "clientBalance": self.balance,
                                "currentSpendPerHr": sum(p.cost for p in self.pods.values()),
                                "spendLimit": 80,
                                "pubKey": "",
                            }
                        }
                    },
                )
        return Reply(
            200,
            {
                "errors": [
                    {
                        "message": "Cannot query this operation on the fake",
                        "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
                    }
                ]
            },
        )

    def _deploy(self, pod_input: Any, *, spot: bool = False) -> Reply:
        """`podFindAndDeployOnDemand(input: $input)` with typed variables (runpodctl's form). Answers HTTP 200
        with `data` or `errors` (providers.md §2.9); the capacity error is RunPod's own wording (runpod-python#21)."""
        op = "podRentInterruptable" if spot else "podFindAndDeployOnDemand"
        input_type = "PodRentInterruptableInput" if spot else "PodFindAndDeployOnDemandInput"

        def error(message: str, code: str = "RUNPOD") -> Reply:
            return Reply(
                200, {"errors": [{"message": message, "path": [op], "extensions": {"code": code}}], "data": {op: None}}
            )

        if not isinstance(pod_input, dict):
            return error(
                'Variable "$input" of required type "PodFindAndDeployOnDemandInput!" was not provided.',
                "BAD_USER_INPUT",
            )
        unknown = sorted(set(pod_input) - DEPLOY_INPUT - ({"bidPerGpu"} if spot else set()))
        if unknown:
            return error(
                f'Variable "$input" got invalid value; Field "{unknown[0]}" is not defined by type "{input_type}".',
                "BAD_USER_INPUT",
            )
        if spot and not isinstance(pod_input.get("bidPerGpu"), (int, float)):
            return error(
                f'Field "bidPerGpu" of required type "Float!" was not provided ({input_type}).', "BAD_USER_INPUT"
            )
        if not isinstance(pod_input.get("ports", ""), str) or not isinstance(pod_input.get("env", []), list):
            return error(
                'Variable "$input" got invalid value; ports is a String, env a list of EnvironmentVariableInput',
                "BAD_USER_INPUT",
            )
        cloud = str(pod_input.get("cloudType") or "ALL")
        count = int(pod_input.get("gpuCount") or 1)
        with self.lock:
            gtype = self.gpu_types.get(pod_input.get("gpuTypeId"))
            clouds = ["SECURE", "COMMUNITY"] if cloud == "ALL" else [cloud]
            place = next(
                (
                    c
                    for c in clouds
                    if gtype is not None
                    and gtype["securePrice" if c == "SECURE" else "communityPrice"] is not None
                    and self.capacity.get((gtype["id"], c), 0) >= count
                ),
                None,
            )
            # A country asked for (`countryCode`) that has no host of the type: no capacity, as RunPod answers.
            elsewhere = (
                pod_input.get("countryCode") and gtype is not None and gtype["countryCode"] != pod_input["countryCode"]
            )
            if place is None or self._too_new(pod_input) or elsewhere:
                return error(NO_CAPACITY)
            price = gtype["securePrice" if place == "SECURE" else "communityPrice"]
            if spot:
                floor = spot_floor(price)
                if float(pod_input["bidPerGpu"]) < floor:
                    # UNCONFIRMED wording; RunPod's own errors carry code "RUNPOD" (providers.md §2.9).
                    return error(f"Your bid price is below the minimum bid price of ${floor}/hr for this GPU.")
                price = float(pod_input["bidPerGpu"])
            env = {e.get("key"): str(e.get("value")) for e in pod_input.get("env") or [] if isinstance(e, dict)}
            public = (
                place == "SECURE"
                or self.community_public_ip
                or (bool(pod_input.get("supportPublicIp")) and self.support_public_ip_honoured)
            )
            pod = FakePod(
                id="".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(14)),
                name=str(pod_input.get("name") or ""),
                image=str(pod_input.get("imageName") or ""),
                gpu_id=gtype["id"],
                gpu_count=count,
                cloud=place,
                disk=int(pod_input.get("containerDiskInGb") or 50),
                ports=[p for p in str(pod_input.get("ports") or "").split(",") if p],
                env=env,
                cost=round(price * count, 4),
                pod_key="rpa_pod_" + secrets.token_hex(16),
                args=str(pod_input.get("dockerArgs") or ""),
                public_ip=public,
                registry=pod_input.get("containerRegistryAuthId"),
                spot=spot,
            )
            self.capacity[(gtype["id"], place)] -= count
            self.pods[pod.id] = pod
            if self.boot_polls <= 0:
                self._become_running(pod)
            return Reply(
                200,
                {
                    "data": {
                        op: {
                            "id": pod.id,
                            "imageName": pod.image,
                            "env": [f"{k}={v}" for k, v in env.items()],
                            "machineId": "m" + pod.id[:11],
                            "desiredStatus": "RUNNING",
                            "costPerHr": pod.cost,
                            "lastStatusChange": f"Rented by User: {dt.datetime.now(dt.UTC):%a %b %d %Y %H:%M:%S} GMT",
                            "machine": {"podHostId": f"{pod.id}-64411eb2"},
                        }
                    }
                },
            )

    def _gpu_types(self, query: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
        wanted = (variables.get("gpuTypesInput") or {}).get("id")
        m = re.search(r'gpuTypes\s*\(\s*input:\s*\{\s*id:\s*"([^"]+)"', query)  # inline literal form
        wanted = wanted or (m.group(1) if m else None)
        lp = variables.get("lowestPriceInput") or {}
        m = re.search(r"lowestPrice\s*\(\s*input:\s*\{([^}]*)\}", query)
        if m and not lp:  # inline form: lowestPrice(input: {gpuCount: 1, secureCloud: true})
            for key, val in re.findall(r"(\w+):\s*([\w.\"-]+)", m.group(1)):
                lp[key] = {"true": True, "false": False}.get(val, val.strip('"'))
        count = int(lp.get("gpuCount") or 1)
        secure = lp.get("secureCloud")
        out = []
        with self.lock:
            for g in self.gpu_types.values():
                if wanted and g["id"] != wanted:
                    continue
                row = {k: v for k, v in g.items() if k != "countryCode" and re.search(rf"\b{k}\b", query)}
                if re.search(r"\blowestPrice\b", query):
                    clouds = {True: ["SECURE"], False: ["COMMUNITY"]}.get(secure, ["SECURE", "COMMUNITY"])
                    prices = [
                        (g["securePrice" if c == "SECURE" else "communityPrice"], self.capacity.get((g["id"], c), 0))
                        for c in clouds
                    ]
                    prices = [(p, free) for p, free in prices if p is not None and free >= count]
                    if prices and count <= g["maxGpuCount"]:
                        price, free = min(prices)
                        stock = "High" if free >= 4 else "Low"
                        lowest = {
                            "uninterruptablePrice": price,
                            "minimumBidPrice": spot_floor(price),
                            "stockStatus": stock,
                            "availableGpuCounts": list(range(1, min(free, g["maxGpuCount"]) + 1)),
                            "minVcpu": 8,
                            "minMemory": 31,
                            "countryCode": g["countryCode"],
                        }
                    else:
                        lowest = {
                            "uninterruptablePrice": None,
                            "minimumBidPrice": None,
                            "stockStatus": None,
                            "availableGpuCounts": [],
                            "minVcpu": None,
                            "minMemory": None,
                            "countryCode": None,
                        }
                    row["lowestPrice"] = lowest
                out.append(row)
        return out
