"""The Vast.ai `Provider`: turns lorarun's requests into Vast queries and Vast's dicts into frozen dataclasses.

All HTTP lives in `vastai_client.py`; facts are in /work/shared/reference/providers.md §1.
"""

from __future__ import annotations

from typing import Any

from lorarun.image.destroy_plan import DestroyCheck, DestroyPlan, DestroyWay
from lorarun.provider_adapters import gpu_names, retry
from lorarun.provider_adapters.base import (
    LABEL_PREFIX,
    Instance,
    InstanceSpec,
    InstanceStatus,
    Offer,
    ResourceRequest,
    SSHEndpoint,
)
from lorarun.provider_adapters.errors import CreateFailed, ProviderError
from lorarun.provider_adapters.vastai.client import VastClient

MIN_DISK_GB = 8.0  # Vast rejects smaller disks (§1.3 x-input-validation)
SSH_PORT_ENV = "-p 22:22"  # how Vast's env object asks for a port mapping (§1.3)
# Vast's ssh run types replace the image's ENTRYPOINT with Vast's own start-up and then run `onstart` (§1.3): our
# image's start-up runs from there in its `--onstart` mode (provider variables, lease watchdog; Vast already set up
# keys and sshd). Guarded, so a stock image without it starts all the same. See image/instance/startup/lorarun-startup.sh.
# Host keys and sshd first: our own start-up (which makes them) never runs under those run types, and an image whose
# Vast start-up found no host keys has nothing listening on 22 (issue 18's source audit). POSIX sh, no procps:
# `/proc/*/comm` says whether an sshd runs; a second sshd would only fail to bind, harmlessly.
SSHD_ONSTART = (
    "ssh-keygen -A >/dev/null 2>&1; grep -qsx sshd /proc/[0-9]*/comm || { mkdir -p /run/sshd; /usr/sbin/sshd; }"
)
IMAGE_ONSTART = (
    SSHD_ONSTART + "\nif [ -x /usr/local/bin/lorarun-startup ]; then /usr/local/bin/lorarun-startup --onstart; fi"
)

# actual_status → InstanceStatus (§1.4). `exited`, `unknown` and `offline` never come back to running.
_STATUS = {
    None: InstanceStatus.PENDING,
    "": InstanceStatus.PENDING,
    "created": InstanceStatus.PENDING,
    "loading": InstanceStatus.PENDING,
    "rebooting": InstanceStatus.PENDING,
    "restarting": InstanceStatus.PENDING,
    "running": InstanceStatus.RUNNING,
    "stopped": InstanceStatus.STOPPED,
    "frozen": InstanceStatus.STOPPED,  # paused with memory, still billing the GPU
    "exited": InstanceStatus.STOPPED,  # container gone, disk still billing: lorarun destroys it
    "unknown": InstanceStatus.ERROR,
    "offline": InstanceStatus.ERROR,
}


class VastProvider:
    name = "vastai"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        call: retry.CallPolicy | None = None,
        **overrides: Any,
    ):
        """`overrides` are CallPolicy fields (timeout, policy, destroy_policy, sleep, clock)."""
        self._key = api_key
        self.client = VastClient(api_key, base_url=base_url, call=retry.CallPolicy.of(call, **overrides))

    def __repr__(self) -> str:
        return f"VastProvider(base_url={self.client.base_url!r})"

    # -- offers ---------------------------------------------------------------------------------------------
    def offers(self, req: ResourceRequest) -> list[Offer]:
        offers = [self._offer(o, req.interruptible) for o in self.client.search_offers(build_query(req))]
        # The server filters already; these checks guard against a server that ignores a filter it does
        # not know (and `geolocation` is free text ending in the country code, §1.2).
        keep = [o for o in offers if _matches(o, req)]
        return sorted(keep, key=lambda o: o.price_per_hour)[: req.limit]

    def _offer(self, o: dict[str, Any], interruptible: bool) -> Offer:
        storage_cost = float(o.get("storage_cost") or 0.0)
        if interruptible:
            # UNCONFIRMED whether `min_bid` includes storage the way `dph_total` does (§1.2 only says it is
            # the interruptible floor); show storage on top so the estimate errs high rather than low.
            price, storage = float(o.get("min_bid") or o.get("dph_total") or 0.0), storage_cost
        else:
            price, storage = float(o.get("dph_total") or 0.0), 0.0  # storage folded into dph_total (§1.2)
        reliability = o.get("reliability2", o.get("reliability"))
        return Offer(
            provider=self.name,
            id=str(o["id"]),
            gpu_name=str(o.get("gpu_name") or ""),
            gpu_count=int(o.get("num_gpus") or 0),
            vram_gb=float(o.get("gpu_ram") or 0.0) / 1000.0,  # MB in the API; the CLI multiplies GB by 1000
            price_per_hour=price,
            reliability=float(reliability) if reliability is not None else None,
            inet_down_mbps=_float(o.get("inet_down")),
            inet_up_mbps=_float(o.get("inet_up")),
            cuda_version=_float(o.get("cuda_max_good")),
            location=str(o.get("geolocation") or ""),
            interruptible=interruptible,
            secure_cloud=secure_cloud(o),
            storage_price_gb_month=storage,
            ram_gb=_ram_gb(o),
            machine=str(o["machine_id"]) if o.get("machine_id") is not None else "",
        )

    # -- lifecycle ------------------------------------------------------------------------------------------
    def create(self, offer: Offer, spec: InstanceSpec) -> Instance:
        if self._key and any(self._key in v for _, v in spec.env):
            raise ValueError("InstanceSpec.env carries the user's Vast API key; it must never reach the instance")
        body = build_create_body(offer, spec)
        answer = self.client.create_instance(offer.id, body)
        instance_id = str(answer["new_contract"])
        try:
            # The per-job key goes on this one instance (§1.4): account keys would reach every future
            # instance of the user and outlive the job.
            self.client.attach_ssh_key(instance_id, spec.ssh_public_key)
        except ProviderError as err:
            raise CreateFailed(
                f"instance {instance_id} was created but its SSH key could not be attached: {err}",
                instance_id=instance_id,
                provider=self.name,
                status=err.status,
            ) from err
        except BaseException as err:  # Ctrl-C or a bug between create and attach: the id must not be lost
            err.instance_id = instance_id  # type: ignore[attr-defined]
            err.add_note(
                f"lorarun: Vast.ai instance {instance_id} was created and may be billing; {self.kill_hint(instance_id)}"
            )
            raise
        return Instance(
            provider=self.name,
            id=instance_id,
            label=spec.label,
            status=InstanceStatus.PENDING,
            price_per_hour=offer.price_per_hour,
            gpu_name=offer.gpu_name,
            gpu_count=offer.gpu_count,
        )

    def get(self, instance_id: str) -> Instance | None:
        raw = self.client.show_instance(instance_id)
        return None if raw is None else to_instance(raw, self.name)

    def destroy(self, instance_id: str) -> None:
        self.client.destroy_instance(instance_id)

    def list_owned(self) -> list[Instance]:
        # Vast's select_filters offer eq/neq/in but no prefix match (§1.6), so the whole list is read and the
        # `lorarun-` prefix is checked here.
        rows = self.client.list_instances()
        return [to_instance(r, self.name) for r in rows if str(r.get("label") or "").startswith(LABEL_PREFIX)]

    def self_destruct(self) -> DestroyPlan:
        # Vast injects CONTAINER_ID and a key that "can only start, stop, or destroy that specific instance"
        # (vast-ai/docs `guides/instances/docker-environment.mdx`; providers.md §1.7). The check reads the instance
        # back: `{"instances": null}` once destroyed (vast-ai/vast-cli tests `test_show_instance_raw_deleted_
        # instance`). UNCONFIRMED whether the instance key may read it; if not, the destroy is reported unconfirmed.
        base = self.client.base_url
        return DestroyPlan(
            id_env="CONTAINER_ID",
            key_env="CONTAINER_API_KEY",
            ways=(DestroyWay("http", method="DELETE", url=f"{base}/api/v0/instances/{{instance_id}}/"),),
            # `?owner=me` as vast-cli's show_instance sends it (vast-ai/vast-cli `api/instances.py`; providers.md §1.4)
            checks=(DestroyCheck("vast_show", f"{base}/api/v0/instances/{{instance_id}}/?owner=me"),),
        )

    def kill_hint(self, instance_id: str) -> str:
        return f"vastai destroy instance {instance_id}   (or delete it at https://cloud.vast.ai/instances/)"


# -- pure mapping helpers (tested directly and through the fake) ----------------------------------------------
def build_query(req: ResourceRequest) -> dict[str, Any]:
    """The `/bundles/` body for `req` (§1.2): filters as {op: value}, units converted (GB → MB for gpu_ram)."""
    q: dict[str, Any] = {
        # The CLI's default filters (§1.2), spelled out because we post the raw body.
        "verified": {"eq": True},
        "external": {"eq": False},
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "num_gpus": {"eq": req.gpu_count},
        "disk_space": {"gte": req.disk_gb},
        # SFTP uploads need direct SSH: only machines with open ports (§1.4).
        "direct_port_count": {"gte": 1},
        "cuda_max_good": {"gte": req.min_cuda},
        "order": [["dph_total", "asc"]],
        "type": "bid" if req.interruptible else "on-demand",
        "limit": req.limit,
        "allocated_storage": req.disk_gb,  # so dph_total includes the storage we will use
    }
    if req.gpu_names:
        # Vast matches names exactly ("A100" finds nothing; "A100 PCIE", "A100 SXM4" do): see gpu_names.py.
        q["gpu_name"] = {"in": list(gpu_names.provider_names(req.gpu_names, gpu_names.VAST))}
    if req.min_vram_gb:
        q["gpu_ram"] = {"gte": round(req.min_vram_gb * 1000)}  # MB (§1.2 units)
    if req.max_price_per_hour is not None:
        q["min_bid" if req.interruptible else "dph_total"] = {"lte": req.max_price_per_hour}
    # Floors on the host's record and network, dstack's defaults where the user sets none (reliability2 ≥ 0.9,
    # inet_down > 128: dstackai/dstack `backends/vastai/compute.py` VastAIProvider extra_filters; providers.md §1.2).
    rel, down = floors(req)
    q["reliability2"] = {"gte": rel}
    q["inet_down"] = {"gte": down}
    if req.regions:
        q["geolocation"] = {"in": list(req.regions)}
    if req.secure_cloud_only:
        # Vast's "secure cloud" = datacenter hosts. The filter key is `datacenter` (vast-ai/vast-python
        # `offers_fields`; the CLI's `datacenter=true`), while offers report it as `hosting_type` (see secure_cloud).
        q["datacenter"] = {"eq": True}
    return q


DEFAULT_MIN_RELIABILITY = 0.9  # reliability2, dstack's floor
DEFAULT_MIN_INET_DOWN_MBPS = 129.0  # dstack asks inet_down > 128; the search's `gte` spelling of it


def floors(req: ResourceRequest) -> tuple[float, float]:
    """(reliability2, inet_down Mb/s) the search asks for at least: the user's own, else dstack's defaults."""
    return (req.min_reliability or DEFAULT_MIN_RELIABILITY, req.min_inet_down_mbps or DEFAULT_MIN_INET_DOWN_MBPS)


def floors_note(min_reliability: float, min_inet_down_mbps: float) -> str | None:
    """The estimate's footnote when a default floor narrowed the Vast search (None when the user set both)."""
    if min_reliability and min_inet_down_mbps:
        return None
    rel = min_reliability or DEFAULT_MIN_RELIABILITY
    down = min_inet_down_mbps or DEFAULT_MIN_INET_DOWN_MBPS
    return (
        f"vastai: only hosts with reliability ≥ {rel:g} and ≥ {down:g} Mb/s down are searched (dstack's floors "
        f"where unset); resources.min_reliability / min_inet_down_mbps set your own"
    )


def _matches(o: Offer, req: ResourceRequest) -> bool:
    if req.regions and o.location and o.location.strip()[-2:].upper() not in {r.upper() for r in req.regions}:
        return False
    if req.max_price_per_hour is not None and o.price_per_hour > req.max_price_per_hour:
        return False
    if req.secure_cloud_only and o.secure_cloud is False:
        return False
    return o.vram_gb >= req.min_vram_gb and o.gpu_count == req.gpu_count


def build_create_body(offer: Offer, spec: InstanceSpec) -> dict[str, Any]:
    """The `PUT /asks/{id}/` body (§1.3): env is a JSON object, the SSH port mapping is one of its keys."""
    env: dict[str, str] = dict(spec.env)
    env[SSH_PORT_ENV] = "1"
    body: dict[str, Any] = {
        "client_id": "me",
        "image": spec.image,
        "disk": max(MIN_DISK_GB, float(spec.disk_gb)),
        "label": spec.label,
        # Vast's entrypoint sets up sshd on a direct port and through its proxy gateway: the spelling the CLI
        # sends for `--ssh --direct` (vast-ai/vast-cli `cli/commands/instances.py::get_runtype`, providers.md
        # §1.3). The proxy is the way in when the direct port stays silent.
        "runtype": "ssh_direc ssh_proxy",
        "env": env,
        "onstart": IMAGE_ONSTART + (f"\n{spec.onstart}" if spec.onstart else ""),
        # Fail rather than leave a stopped (storage-billing) instance when it cannot start (§1.3).
        "cancel_unavail": True,
    }
    if spec.registry_login is not None:  # private image: Vast's host pulls with `docker login` flags (§1.3)
        login = spec.registry_login
        body["image_login"] = f"-u {login.username} -p {login.password} {login.registry}"
    if offer.interruptible:
        body["price"] = spec.bid_price_per_hour or offer.price_per_hour  # leave out for on-demand (§1.3)
    return body


def secure_cloud(o: dict[str, Any]) -> bool | None:
    """Whether a Vast offer is on a datacenter ("secure cloud") host. Offers carry `hosting_type` (0 a consumer
    host, 1 a datacenter) and no `datacenter` key (vast-ai/vast-cli `vastai/data/offer.py`; providers.md §1.2
    field table); dstack's gpuhunt filters community vs secure the same way (dstackai/gpuhunt
    `providers/vastai.py`, `community_cloud`). `datacenter` is read too, for older answers that had it."""
    if isinstance(o.get("hosting_type"), (int, bool)):
        return int(o["hosting_type"]) == 1
    if "datacenter" in o and o["datacenter"] is not None:
        return bool(o["datacenter"])
    return None


def ssh_endpoints(raw: dict[str, Any]) -> tuple[SSHEndpoint | None, tuple[SSHEndpoint, ...], str]:
    """(first choice, fallbacks, "direct"|"proxy"|"").

    Direct first: `public_ipaddr` + `ports["22/tcp"][0].HostPort` (a string) — faster and what SFTP prefers
    (vast-ai/docs `connect/ssh.mdx`; providers.md §1.4). The proxy gateway `ssh_host`/`ssh_port` (+1 with a
    jupyter runtype, vast-ai/vast-cli `cli/commands/misc.py` ssh-url) "works on all machines"; SkyPilot
    connects through it alone ("ssh_port is always set; ports['22/tcp'] may be None", skypilot-org/skypilot
    `sky/provision/vast/instance.py::get_cluster_info`). So it is the fallback when the direct port is silent."""
    direct = proxy = None
    ports = raw.get("ports") or {}
    mapping = ports.get("22/tcp") if isinstance(ports, dict) else None
    ip = str(raw.get("public_ipaddr") or "").strip()  # may carry whitespace (dstack strips it)
    if mapping and ip:
        try:
            direct = SSHEndpoint(ip, int(mapping[0]["HostPort"]))  # HostPort is a string
        except (KeyError, IndexError, TypeError, ValueError):
            direct = None
    host, port = raw.get("ssh_host"), raw.get("ssh_port")
    if host and port:
        try:
            proxy = SSHEndpoint(str(host), int(port) + (1 if "jupyter" in str(raw.get("image_runtype") or "") else 0))
        except (TypeError, ValueError):
            proxy = None
    if direct is not None:
        return direct, (proxy,) if proxy is not None else (), "direct"
    return proxy, (), "proxy" if proxy is not None else ""


def ssh_endpoint(raw: dict[str, Any]) -> tuple[SSHEndpoint | None, str]:
    first, _, kind = ssh_endpoints(raw)
    return first, kind


# Statuses from which an instance "will never reach running" (vast-ai/docs `hello-world.mdx`; providers.md §1.4).
_NEVER_RUNS = {
    "exited": "the container exited",
    "unknown": "no heartbeat from the host",
    "offline": "the host went offline",
}


def start_failure(raw: dict[str, Any]) -> str:
    """Why Vast's own fields say this instance will never come up, or "".

    - `actual_status == "created"` with ": OCI runtime create failed:" in `status_msg`: the container could not be
      created and Vast does not retry it (dstackai/dstack `backends/vastai/compute.py::update_provisioning_data`
      raises ProvisioningError on exactly this); the official self-test treats "Error" in `status_msg` of a
      non-running instance the same way (vast-ai/vast-python `vast.py::wait_for_instance`).
    - outbid: `cur_state`, `intended_status` and `next_state` all "stopped" (dstack, providers.md §1.4). lorarun
      never stops an instance, so an instance in that state was stopped by Vast; it keeps billing storage.
    - `exited`, `unknown`, `offline`: never reach running (vast-ai/docs `hello-world.mdx`).
    """
    actual = raw.get("actual_status")
    msg = str(raw.get("status_msg") or "").strip()
    if actual in _NEVER_RUNS:
        return f"{_NEVER_RUNS[actual]} ({actual}{': ' + msg[:200] if msg else ''})"
    if raw.get("cur_state") == raw.get("intended_status") == raw.get("next_state") == "stopped":
        return "outbid: Vast stopped the instance (cur_state, intended_status and next_state are all stopped)"
    if actual in (None, "", "created", "loading") and (": OCI runtime create failed:" in msg or "Error" in msg):
        return f"the container could not start: {msg[:300]}"
    return ""


def to_instance(raw: dict[str, Any], provider: str = "vastai") -> Instance:
    actual = raw.get("actual_status")
    status = _STATUS.get(actual, InstanceStatus.ERROR)
    failure = start_failure(raw)
    if failure and status in (InstanceStatus.PENDING, InstanceStatus.RUNNING):
        status = InstanceStatus.STOPPED if failure.startswith("outbid") else InstanceStatus.ERROR
    ssh, fallbacks, kind = ssh_endpoints(raw) if status is InstanceStatus.RUNNING else (None, (), "")
    extra = [("actual_status", str(actual)), ("intended_status", str(raw.get("intended_status")))]
    if kind:
        extra.append(("ssh", kind))
    for key in ("machine_id", "image_uuid", "geolocation"):
        if raw.get(key) is not None:
            extra.append((key, str(raw[key])))
    return Instance(
        provider=provider,
        id=str(raw.get("id")),
        label=str(raw.get("label") or ""),
        status=status,
        ssh=ssh,
        price_per_hour=_float(raw.get("dph_total")),
        gpu_name=str(raw.get("gpu_name") or ""),
        gpu_count=int(raw.get("num_gpus") or 0),
        status_message=str(raw.get("status_msg") or ""),
        started_at=_float(raw.get("start_date")),
        extra=tuple(extra),
        start_failure=failure,
        machine=str(raw["machine_id"]) if raw.get("machine_id") is not None else "",
        ssh_fallbacks=fallbacks,
    )


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _ram_gb(o: dict) -> float | None:
    """`cpu_ram` is the machine's RAM in MB (providers.md §1.2 units). An offer of part of a machine's GPUs gets
    that share of it (`gpu_frac`; UNCONFIRMED whether Vast enforces the split, so the estimate errs low)."""
    ram = _float(o.get("cpu_ram"))
    if ram is None:
        return None
    return ram / 1000.0 * (_float(o.get("gpu_frac")) or 1.0)
