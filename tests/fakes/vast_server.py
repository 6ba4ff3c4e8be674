"""A fake Vast.ai API over real HTTP, faithful to /work/shared/reference/providers.md §1.

Endpoints: POST /api/v0/bundles/, PUT /api/v0/asks/{id}/, GET|PUT|DELETE /api/v0/instances/{id}/,
POST /api/v0/instances/{id}/ssh/, GET /api/v0/instances/ (legacy list), GET /api/v1/instances/ (paginated),
GET /api/v0/users/current/. Units as Vast's: gpu_ram in MB, disk in GB, dph_* in $/h.

Lifecycle: an instance answers `actual_status` null on its first GET, then "loading", and "running" once
`boot_polls` GETs have answered not-running (0: running at once; `run_now()` skips ahead). When it turns
running, `on_create(instance_id, env, public_key)` may return the (host, port) of a real sshd, which the fake
then reports as its SSH endpoint (`env` includes CONTAINER_ID/CONTAINER_API_KEY, as Vast injects them).
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._server import FakeAPI, Reply, Request

API_KEY = "vast-test-key-0123456789abcdef"
CONTROL_KEYS = {"order", "type", "limit", "allocated_storage"}
SEARCH_TYPES = {"on-demand", "ondemand", "bid", "interruptible", "reserved"}  # §1.2: accept all spellings
RUNTYPE_TOKENS = {
    "ssh",
    "ssh_proxy",
    "ssh_direct",
    "ssh_direc",
    "jupyter",
    "jupyter_proxy",
    "jupyter_direct",
    "jupyter_direc",
    "args",
}
# v1 list filters work on stored columns only; computed ones (dph_total, num_gpus) give 400 (§1.6).
STORED_COLUMNS = {"id", "label", "actual_status", "intended_status", "gpu_name", "verification", "machine_id"}

OnCreate = Callable[[str, dict, str], "tuple[str, int]"]
OnDestroy = Callable[[str], None]


def default_offers() -> list[dict[str, Any]]:
    def offer(
        oid,
        gpu,
        n,
        ram_mb,
        base,
        storage_cost,
        min_bid,
        rel,
        down,
        cuda,
        geo,
        direct=2,
        verified=True,
        datacenter=False,
    ):
        return {
            "id": oid,
            "ask_contract_id": oid,
            "bundle_id": oid + 7,
            "machine_id": 30000 + oid % 1000,
            "host_id": 4000 + oid % 97,
            "gpu_name": gpu,
            "num_gpus": n,
            "gpu_ram": ram_mb,
            "gpu_total_ram": ram_mb * n,
            "gpu_frac": 1.0,
            "compute_cap": 890,
            "cuda_max_good": cuda,
            "driver_version": "550.54.15",
            "dph_base": base,
            "storage_cost": storage_cost,
            "min_bid": min_bid,
            "inet_up_cost": 0.005,
            "inet_down_cost": 0.005,
            "reliability": rel,
            "reliability2": rel,
            "score": 100 * rel,
            "dlperf": 40.0,
            "dlperf_per_dphtotal": 80.0,
            "inet_up": down / 2,
            "inet_down": down,
            "disk_space": 200.0,
            "disk_bw": 1500.0,
            "cpu_cores": 32,
            "cpu_cores_effective": 16.0,
            "cpu_ram": 64000,
            "direct_port_count": direct,
            "geolocation": geo,
            "public_ipaddr": f"198.51.100.{oid % 250}",
            "static_ip": True,
            # Rows carry `verification` (a string) and `hosting_type` (an integer code), not the `verified` and
            # `datacenter` that queries filter on (vast-ai/docs c6246226 `api-reference/openapi/yaml/
            # search_offers.yaml` example row; filter names: vast-ai/vast-python `offers_fields`). UNCONFIRMED: 1
            # is a datacenter ("secure cloud") host — the docs' metrics filter has `secure_cloud | community`, the
            # show_instance example has 1, the search example 0.
            "verification": "verified" if verified else "unverified",
            "rentable": True,
            "rented": False,
            "external": False,
            "is_bid": False,
            "hosting_type": 1 if datacenter else 0,
            "duration": 30 * 86400.0,
            "end_date": time.time() + 30 * 86400,
        }

    return [
        offer(1001, "RTX 4090", 1, 24564, 0.35, 0.15, 0.18, 0.995, 800.0, 12.9, "Washington, US"),
        offer(1002, "RTX 4090", 1, 24564, 0.29, 0.20, 0.15, 0.97, 400.0, 12.8, "Quebec, CA"),
        offer(1003, "RTX 3090", 1, 24576, 0.18, 0.10, 0.09, 0.99, 500.0, 12.8, "Brandenburg, DE"),
        offer(1004, "A100 SXM4", 1, 81920, 1.10, 0.30, 0.60, 0.999, 2000.0, 13.0, "Texas, US", datacenter=True),
        offer(1005, "RTX 4090", 2, 24564, 0.62, 0.15, 0.33, 0.99, 900.0, 12.8, "Oregon, US"),
        offer(1006, "RTX 4090", 1, 24564, 0.25, 0.10, 0.12, 0.99, 600.0, 12.8, "Ohio, US", direct=0),
        offer(1007, "RTX 3060", 1, 12288, 0.08, 0.10, 0.04, 0.92, 100.0, 11.8, "Hanoi, VN", verified=False),
    ]


@dataclass
class FakeInstance:
    id: int
    offer: dict[str, Any]
    label: str
    image: str
    env: dict[str, str]
    onstart: str
    runtype: str
    disk: float
    dph_total: float
    instance_api_key: str
    is_bid: bool = False
    actual_status: str | None = None
    intended_status: str = "running"
    status_msg: str | None = None
    polls: int = 0
    ssh_keys: list[str] = field(default_factory=list)
    host: str = ""
    port: int = 0
    start_date: float = field(default_factory=time.time)
    cur_state: str = "stopped"
    next_state: str = "running"
    direct_port: int = 0  # where `ports["22/tcp"]` points (the sshd, or a silent port)
    proxy_host: str = ""  # where `ssh_host`/`ssh_port` point (Vast's gateway)
    proxy_port: int = 0

    def direct(self) -> bool:
        return int(self.offer.get("direct_port_count") or 0) >= 1


# Filter names that are not row fields: what they test on the row (see default_offers).
DERIVED_FILTERS = {
    "verified": lambda row: row.get("verification") == "verified",
    "datacenter": lambda row: row.get("hosting_type") == 1,
}
OCI_FAILURE = (
    "Error response from daemon: failed to create task for container: failed to create shim task: "
    "OCI runtime create failed: runc create failed: unable to start container process: error during "
    "container init: error running hook #0: exit status 1, stdout: , stderr: Auto-detected mode as "
    "'legacy' nvidia-container-cli: initialization error: nvml error: driver/library version mismatch"
)


def _value(row: dict[str, Any], key: str) -> Any:
    return DERIVED_FILTERS[key](row) if key in DERIVED_FILTERS else row.get(key)


def _op(value: Any, op: str, arg: Any, key: str = "") -> bool:
    if key == "geolocation" and isinstance(value, str):
        # Free text ending in the country code ("Washington, US"); queries name the code (§1.2 example).
        value = value.strip()[-2:]
    if op == "eq":
        return value == arg
    if op == "neq":
        return value != arg
    if op == "in":
        return value in arg
    if op == "notin":
        return value not in arg
    if value is None:
        return False
    return {"gt": value > arg, "gte": value >= arg, "lt": value < arg, "lte": value <= arg}[op]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed at once): a connect to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeVast(FakeAPI):
    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        offers: list[dict] | None = None,
        boot_polls: int = 2,
        on_create: OnCreate | None = None,
        on_destroy: OnDestroy | None = None,
        credit: float = 25.0,
        direct_ssh_silent: bool = False,
    ):
        super().__init__()
        self.api_key = api_key
        self.offers: dict[int, dict[str, Any]] = {o["id"]: o for o in (offers or default_offers())}
        self.instances: dict[int, FakeInstance] = {}
        self.boot_polls = boot_polls
        self.on_create = on_create
        self.on_destroy = on_destroy
        self.credit = credit
        self.destroyed: list[int] = []
        self.interrupted: dict[str, float] = {}  # outbid instances → the fake's clock then (`interrupt`)
        # Seconds show instance wants between two calls (0: not enforced; Vast's is 2.0, see _show).
        self.show_min_interval = 0.0
        self.rate_limited = 0  # 429s answered for calling show instance too soon
        self._last_show: dict[str, float] = {}
        self.clock = time.time  # the fake's clock: tests may inject one
        # Failed starts by ask id: "oci" (stays `created` with the runtime's error in status_msg, as dstack sees
        # it: dstackai/dstack `backends/vastai/compute.py::update_provisioning_data`) or "outbid" (stopped by
        # Vast: cur_state, intended_status and next_state all "stopped", providers.md §1.4 DSTACK).
        self.start_failures: dict[int, str] = {}
        self.fail_next_starts: list[str] = []  # the same, for the next creates whatever their ask (one each)
        # The direct port mapping answers nothing (a host firewall, a broken NAT): only the proxy gateway reaches
        # the sshd, which Vast sets up for every ssh runtype (vast-ai/docs `connect/ssh.mdx`).
        self.direct_ssh_silent = direct_ssh_silent
        # DELETE answers 200 with {"success": false} this many times without destroying. Vast's general error
        # shape can come with a 2xx (vast-ai/docs `rate-limits-and-errors.mdx`: some endpoints "send only msg");
        # UNCONFIRMED which code it carries on destroy, so a generic one is used.
        self.destroy_refusals = 0
        self._ids = itertools.count(8_000_001)
        self._ports = itertools.count(20000)

    # -- test controls -------------------------------------------------------------------------------------
    def vanish(self, instance_id: str | int, *, run_on_destroy: bool = False) -> None:
        """The host died: the instance is gone without a DELETE (on_destroy only if asked, to stop its sshd)."""
        with self.lock:
            gone = self.instances.pop(int(instance_id), None)
        if gone is not None and run_on_destroy and self.on_destroy is not None:
            self.on_destroy(str(instance_id))

    def interrupt(self, instance_id: str | int, *, intended_status: str = "stopped") -> None:
        """Outbid: "When outbid, the instance is stopped (not destroyed) and storage keeps billing; it resumes when it
        regains priority" (vast-ai/docs `faq/rental-types.mdx`, providers.md §1.8). dstack reads an outbid
        instance as cur_state, intended_status and next_state all "stopped" (dstackai/dstack
        `backends/vastai/compute.py::update_provisioning_data`, providers.md §1.4); `intended_status="running"`
        models the other shape seen, the container stopped while the instance is still meant to run. The
        container stops, so its sshd and processes end; the instance record stays (and would bill storage)."""
        with self.lock:
            inst = self.instances[int(instance_id)]
            assert inst.is_bid, "only bid instances are outbid"
            inst.actual_status = inst.cur_state = "stopped"
            inst.intended_status = intended_status
            inst.status_msg, inst.polls = "Instance stopped: outbid", 10**6
            self.interrupted[str(inst.id)] = self.clock()
        if self.on_destroy is not None:
            self.on_destroy(str(instance_id))

    def run_now(self, instance_id: str | int) -> None:
        with self.lock:
            self._become_running(self.instances[int(instance_id)])

    def set_status(
        self,
        instance_id: str | int,
        actual_status: str | None,
        status_msg: str | None = None,
        intended_status: str | None = None,
    ) -> None:
        with self.lock:
            inst = self.instances[int(instance_id)]
            inst.actual_status, inst.status_msg = actual_status, status_msg
            inst.intended_status = intended_status or inst.intended_status
            inst.polls = 10**6  # freeze the automatic lifecycle

    def live_ids(self) -> list[str]:
        with self.lock:
            return [str(i) for i in self.instances]

    def default_error(self, status: int) -> Reply:
        if status == 429:  # usually plain text, never Retry-After (§1.9)
            return Reply(429, "API requests too frequent endpoint threshold=3.0", content_type="text/plain")
        if status >= 500:
            return Reply(status, "<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if status in (401, 403):
            return Reply(status, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
        return Reply(status, {"success": False, "error": "invalid_args", "msg": f"error {status}"})

    # -- routing -------------------------------------------------------------------------------------------
    def route(self, req: Request) -> Reply:
        p = req.path.rstrip("/").split("/")  # ['', 'api', 'v0', ...]
        m = req.method
        if p[1:3] == ["api", "v0"]:
            rest = p[3:]
            if rest == ["bundles"] and m == "POST":
                return self._search(req)
            if len(rest) == 2 and rest[0] == "asks" and m == "PUT":
                return self._create(req, rest[1])
            if rest == ["instances"] and m == "GET":
                return self._list_v0(req)
            if rest == ["users", "current"] and m == "GET":
                return self._user(req)
            if len(rest) == 2 and rest[0] == "instances":
                return {"GET": self._show, "DELETE": self._destroy, "PUT": self._manage}.get(
                    m, lambda r, i: Reply(405, {"error": "method_not_allowed"})
                )(req, rest[1])
            if len(rest) == 3 and rest[0] == "instances" and rest[2] == "ssh" and m == "POST":
                return self._attach_ssh(req, rest[1])
        if p[1:4] == ["api", "v1", "instances"] and m == "GET":
            return self._list_v1(req)
        return Reply(404, {"success": False, "error": "not_found", "msg": "Unknown endpoint"})

    def _auth(self, req: Request) -> Reply | None:
        if req.token() != self.api_key:
            return Reply(401, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
        return None

    # -- search (§1.2) -------------------------------------------------------------------------------------
    def _search(self, req: Request) -> Reply:
        token = req.token()
        if token is not None and token != self.api_key:  # the search endpoint documents a bad key as 404
            return Reply(404, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
        q = req.json()
        if not isinstance(q, dict):
            return Reply(400, {"error": "invalid_request", "msg": "Invalid json body"})
        kind = q.get("type", "on-demand")
        if kind not in SEARCH_TYPES:
            return Reply(400, {"error": "invalid_request", "msg": f"invalid type {kind}"})
        storage = float(q.get("allocated_storage", 5.0))
        out = []
        with self.lock:
            for offer in self.offers.values():
                o = dict(offer)
                o["dph_total"] = round(o["dph_base"] + storage * o["storage_cost"] / 30 / 24, 6)
                o["is_bid"] = kind in ("bid", "interruptible")
                try:
                    ok = all(
                        _op(_value(o, k), op, arg, k)
                        for k, cond in q.items()
                        if k not in CONTROL_KEYS
                        for op, arg in cond.items()
                    )
                except (KeyError, TypeError, AttributeError):
                    return Reply(400, {"error": "invalid_request", "msg": "Invalid query"})
                if ok and not o["rented"]:
                    out.append(o)
        for key, direction in reversed(q.get("order") or [["score", "desc"]]):
            out.sort(key=lambda o: o.get(key) or 0, reverse=direction == "desc")
        return Reply(200, {"offers": out[: int(q.get("limit") or 64)]})

    # -- create (§1.3) -------------------------------------------------------------------------------------
    def _create(self, req: Request, ask: str) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        body = req.json()
        if not isinstance(body, dict):
            return Reply(400, {"success": False, "error": "invalid_args", "msg": "Invalid json body"})
        err = _validate_create(body)
        if err:
            return Reply(
                400,
                {
                    "success": False,
                    "error": "invalid_args",
                    "msg": f"error 400/3467: Invalid args: {err}",
                    "ask_id": ask,
                },
            )
        with self.lock:
            offer = self.offers.get(int(ask)) if ask.isdigit() else None
            if offer is None:
                return Reply(
                    404,
                    {
                        "success": False,
                        "error": "invalid_args",
                        "ask_id": ask,
                        "msg": f"error 404/3603: no_such_ask Instance type by id {ask} is not available.",
                    },
                )
            if offer["rented"]:
                return Reply(
                    410,
                    {
                        "success": False,
                        "error": "no_such_ask",
                        "ask_id": ask,
                        "msg": f"error 410/3907: no_such_ask Instance type {ask} is no longer available.",
                    },
                )
            if self.credit <= 0:
                # UNCONFIRMED: Vast documents no shape for this (§1.3); 402 + insufficient_credit is our guess.
                return Reply(
                    402,
                    {
                        "success": False,
                        "error": "insufficient_credit",
                        "msg": "Your account lacks credit; please add credit to continue.",
                    },
                )
            env = body.get("env") or {}
            price = body.get("price")
            inst = FakeInstance(
                id=next(self._ids),
                offer=offer,
                label=str(body.get("label") or ""),
                image=body["image"],
                env={k: v for k, v in env.items() if not k.startswith("-")},
                onstart=str(body.get("onstart") or ""),
                runtype=str(body.get("runtype") or "ssh"),
                disk=float(body.get("disk") or 8),
                dph_total=round(offer["dph_base"] + float(body.get("disk") or 8) * offer["storage_cost"] / 720, 6),
                instance_api_key=secrets.token_hex(32),
                is_bid=price is not None,
            )
            offer["rented"] = True
            self.instances[inst.id] = inst
            failure = self.start_failures.get(offer["id"]) or (
                self.fail_next_starts.pop(0) if self.fail_next_starts else None
            )
            if failure == "oci":
                inst.actual_status, inst.status_msg, inst.polls = "created", OCI_FAILURE, 10**6
            elif failure == "outbid":
                inst.actual_status, inst.intended_status, inst.cur_state, inst.polls = (
                    "stopped",
                    "stopped",
                    "stopped",
                    10**6,
                )
                inst.status_msg = "Instance stopped: outbid"
            if price is not None and float(price) < offer["min_bid"]:
                # Interruptible gotcha (§1.3): created stopped, error returned, new_contract still present.
                # UNCONFIRMED status/code; dstack only relies on the presence of new_contract.
                inst.actual_status, inst.intended_status, inst.polls = "stopped", "stopped", 10**6
                return Reply(
                    400,
                    {
                        "success": False,
                        "error": "invalid_price",
                        "new_contract": inst.id,
                        "msg": f"bid {price} below minimum {offer['min_bid']}; instance created stopped",
                    },
                )
            if self.boot_polls <= 0:
                self._become_running(inst)
            return Reply(200, {"success": True, "new_contract": inst.id, "instance_api_key": inst.instance_api_key})

    def _attach_ssh(self, req: Request, iid: str) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        body = req.json()
        key = body.get("ssh_key") if isinstance(body, dict) else None
        if not key:
            return Reply(400, {"success": False, "error": "no_ssh_key", "msg": "No ssh key provided"})
        with self.lock:
            inst = self.instances.get(int(iid)) if iid.isdigit() else None
            if inst is None:
                return Reply(404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"})
            inst.ssh_keys.append(key)
        return Reply(200, {"success": True, "msg": "SSH key attached successfully"})

    # -- status (§1.4) -------------------------------------------------------------------------------------
    def _become_running(self, inst: FakeInstance) -> None:
        if inst.actual_status == "running":
            return
        inst.actual_status = inst.cur_state = "running"
        inst.start_date = time.time()
        if self.on_create is not None:
            env = dict(
                inst.env,
                CONTAINER_ID=str(inst.id),
                CONTAINER_API_KEY=inst.instance_api_key,
                VAST_CONTAINERLABEL=f"C.{inst.id}",
            )
            inst.host, inst.port = self.on_create(str(inst.id), env, "\n".join(inst.ssh_keys))
        else:
            inst.host, inst.port = f"198.51.100.{inst.id % 250}", next(self._ports)
        # The gateway's name is Vast's (ssh<N>.vast.ai, providers.md §1.4), unreachable from tests; with a silent
        # direct port the gateway is where the sshd answers and the direct mapping leads nowhere.
        inst.direct_port, inst.proxy_host, inst.proxy_port = (
            inst.port,
            f"ssh{inst.id % 9 + 1}.vast.ai",
            10000 + inst.id % 50000,
        )
        if self.direct_ssh_silent:
            inst.direct_port, inst.proxy_host, inst.proxy_port = _closed_port(), inst.host, inst.port

    def _advance(self, inst: FakeInstance) -> None:
        if inst.polls >= 10**6:
            return
        inst.polls += 1
        if inst.polls >= self.boot_polls:
            self._become_running(inst)
        else:
            inst.actual_status = "loading"

    def _view(self, inst: FakeInstance) -> dict[str, Any]:
        o = inst.offer
        tokens = inst.runtype.split()
        runtype = "ssh ssh_direc ssh_proxy" if any(t.startswith("ssh_direc") for t in tokens) else inst.runtype
        view = {
            "id": inst.id,
            "machine_id": o["machine_id"],
            "actual_status": inst.actual_status,
            "intended_status": inst.intended_status,
            "cur_state": inst.cur_state,
            "next_state": inst.intended_status,
            "status_msg": inst.status_msg,
            "label": inst.label,
            "image_uuid": inst.image,
            "image_runtype": runtype,
            "ssh_host": inst.proxy_host or f"ssh{inst.id % 9 + 1}.vast.ai",
            "ssh_port": inst.proxy_port or 10000 + inst.id % 50000,
            "public_ipaddr": o["public_ipaddr"],
            "gpu_name": o["gpu_name"],
            "hosting_type": o["hosting_type"],
            "verification": o["verification"],
            "num_gpus": o["num_gpus"],
            "gpu_ram": o["gpu_ram"],
            "dph_total": inst.dph_total,
            "disk_space": inst.disk,
            "start_date": inst.start_date,
            "extra_env": [[k, v] for k, v in inst.env.items()],
            "reliability2": o["reliability2"],
            "is_bid": inst.is_bid,
            "geolocation": o["geolocation"],
            "direct_port_start": 20000 if inst.direct() else -1,
            "direct_port_end": 20100 if inst.direct() else -1,
        }
        if inst.actual_status == "running" and inst.port:
            if inst.direct():
                # `ports` only on running instances; HostPort is a string (§1.4).
                view["public_ipaddr"] = f"{inst.host}\n"  # real rows may carry whitespace
                view["ports"] = {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(inst.direct_port)}]}
            else:  # no open ports on this machine: only the proxy gateway
                view["ssh_host"], view["ssh_port"] = inst.host, inst.port
        return view

    def _show(self, req: Request, iid: str) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        if self.show_min_interval:
            # Show instance allows one call per `x-rate-limit` 2.0 s per identity (vast-ai/docs
            # `show_instance.yaml`); sooner is a 429 with JSON `detail` (create/show/manage, providers.md §1.9).
            now = self.clock()
            with self.lock:
                last = self._last_show.get(iid)
                self._last_show[iid] = now
            if last is not None and now - last < self.show_min_interval:
                self.rate_limited += 1
                return Reply(429, {"detail": f"API requests too frequent endpoint threshold={self.show_min_interval}"})
        with self.lock:
            inst = self.instances.get(int(iid)) if iid.isdigit() else None
            if inst is None:
                return Reply(200, {"instances": None})  # destroyed or unknown (§1.4)
            view = self._view(inst)
            self._advance(inst)
        return Reply(200, {"instances": view})

    def _list_v0(self, req: Request) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        with self.lock:
            rows = [self._view(i) for i in self.instances.values()]
        return Reply(200, {"instances": rows or None})

    def _list_v1(self, req: Request) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        try:
            filters = json.loads(req.query.get("select_filters") or "{}")
        except ValueError:
            return Reply(400, {"success": False, "error": "invalid_args", "msg": "select_filters is not JSON"})
        for key in filters:
            if key not in STORED_COLUMNS:
                return Reply(
                    400, {"success": False, "error": "invalid_args", "msg": f"{key} is not a valid search key"}
                )
        limit = int(req.query.get("limit") or 25)
        limit = 5 if limit <= 0 else min(limit, 25)
        offset = 0
        if tok := req.query.get("after_token"):
            try:
                offset = int(base64.urlsafe_b64decode(tok.encode()).decode().removeprefix("after:"))
            except ValueError:
                return Reply(400, {"success": False, "error": "invalid_token", "msg": "invalid after_token"})
        with self.lock:
            rows = [self._view(i) for i in sorted(self.instances.values(), key=lambda i: i.id)]
        rows = [r for r in rows if all(_op(r.get(k), op, arg) for k, c in filters.items() for op, arg in c.items())]
        page = rows[offset : offset + limit]
        nxt = offset + limit
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["label"]] = counts.get(r["label"], 0) + 1
        return Reply(
            200,
            {
                "success": True,
                "instances_found": len(page),
                "total_instances": len(rows),
                "label_counts": counts,
                "instances": page,
                "next_token": base64.urlsafe_b64encode(f"after:{nxt}".encode()).decode() if nxt < len(rows) else None,
            },
        )

    # -- destroy / manage (§1.5, §1.7) ---------------------------------------------------------------------
    def _destroy(self, req: Request, iid: str) -> Reply:
        if not iid.isdigit():
            return Reply(400, {"success": False, "error": "invalid_args", "msg": "invalid instance_id"})
        token = req.token()
        with self.lock:
            inst = self.instances.get(int(iid))
            own_key = inst is not None and token == inst.instance_api_key
            if token != self.api_key and not own_key:
                # An instance key only works on its own instance (§1.7).
                return Reply(401, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
            if inst is None:
                return Reply(404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"})
            if self.destroy_refusals > 0:
                self.destroy_refusals -= 1
                return Reply(
                    200,
                    {
                        "success": False,
                        "error": "server_error",
                        "msg": "Could not destroy the instance right now; try again.",
                    },
                )
            del self.instances[inst.id]
            self.destroyed.append(inst.id)
        if self.on_destroy is not None:
            self.on_destroy(str(inst.id))
        return Reply(200, {"success": True})

    def _manage(self, req: Request, iid: str) -> Reply:
        token = req.token()
        body = req.json()
        with self.lock:
            inst = self.instances.get(int(iid)) if iid.isdigit() else None
            if token != self.api_key and not (inst is not None and token == inst.instance_api_key):
                return Reply(401, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
            if inst is None:
                return Reply(404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"})
            if not isinstance(body, dict):
                return Reply(400, {"success": False, "error": "invalid_args", "msg": "Invalid json body"})
            if "label" in body:
                if len(str(body["label"])) > 1024:
                    return Reply(
                        400,
                        {
                            "error": "label_too_long",
                            "msg": "Please limit label length to 1024 characters, ideally less than 128.",
                        },
                    )
                inst.label = str(body["label"])
                return Reply(200, {"success": True, "msg": f"label for {inst.id} set to '{inst.label}'"})
            if body.get("state") in ("stopped", "running"):
                inst.intended_status = body["state"]
                if body["state"] == "stopped":
                    inst.actual_status, inst.polls = "stopped", 10**6
                else:
                    self._become_running(inst)
                return Reply(200, {"success": True})
        return Reply(400, {"success": False, "error": "invalid_args", "msg": "nothing to do"})

    def _user(self, req: Request) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        return Reply(
            200,
            {
                "id": 123456,
                "key_id": 42,
                "email": "test@example.com",
                "credit": self.credit,
                "balance": self.credit,
                "ssh_key": "",
                "sid": "s",
            },
        )


def _validate_create(body: dict[str, Any]) -> str:
    """The create endpoint's input validation (§1.3 x-input-validation), as an error text or ''."""
    image = body.get("image")
    if not image and not body.get("template_hash_id"):
        return "image is required"
    if image and len(image) > 1024:
        return "image too long"
    if "disk" in body and float(body["disk"]) < 8:
        return "disk must be at least 8"
    env = body.get("env")
    if env is not None and not isinstance(env, dict):
        return "env must be a JSON object"  # the string form is for templates only
    if env and (
        any(len(f"{k}={v}") > 256 for k, v in env.items()) or sum(len(f"{k}={v}") for k, v in env.items()) > 32768
    ):
        return "env entry too long"
    runtype = body.get("runtype")
    if runtype is not None and not set(str(runtype).split()) <= RUNTYPE_TOKENS:
        return f"invalid runtype {runtype}"
    if len(str(body.get("label") or "")) > 256:
        return "label too long"
    if len(str(body.get("onstart") or "")) + len(str(body.get("args_str") or "")) > 4096:
        return "onstart too long"
    if "price" in body and not 0.001 <= float(body["price"]) <= 128:
        return "price out of range"
    return ""
