"""The RunPod `Provider`: GraphQL prices → Offers, REST v2 pods → Instances (providers.md §2).

An Offer's id is `"<gpuTypeId>::<SECURE|COMMUNITY>"`: RunPod rents a GPU type in a cloud, not a machine, and
the gpuTypeId itself contains spaces but never "::" (e.g. "NVIDIA GeForce RTX 4090").
"""

from __future__ import annotations

import datetime as dt
import ipaddress
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
from lorarun.provider_adapters.errors import ProviderError
from lorarun.provider_adapters.runpod.client import RunPodClient
from lorarun.provider_adapters.runpod.pod_bodies import (  # noqa: F401 - offer ids and bodies, re-exported
    COMMUNITY,
    SECURE,
    SEP,
    build_create_body,
    build_deploy_input,
    offer_id,
    parse_offer_id,
    secure_input,
    spot_input,
)

# Container disk: $0.10/GB/month while running, nothing while stopped (RPDOCS pods/pricing, §2.8). Not folded
# into the GPU price, so it is shown on top.
CONTAINER_DISK_GB_MONTH = 0.10

_STATUS = {
    "PROVISIONING": InstanceStatus.PENDING,
    "STARTING": InstanceStatus.PENDING,
    "RUNNING": InstanceStatus.RUNNING,
    "EXITED": InstanceStatus.STOPPED,
    "ERROR": InstanceStatus.ERROR,
    "TERMINATED": InstanceStatus.TERMINATED,
}


class RunPodProvider:
    name = "runpod"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        rest_url: str | None = None,
        graphql_url: str | None = None,
        call: retry.CallPolicy | None = None,
        **overrides: Any,
    ):
        """`overrides` are CallPolicy fields (timeout, policy, destroy_policy, sleep, clock)."""
        self._key = api_key
        self.client = RunPodClient(
            api_key, rest_url=rest_url, graphql_url=graphql_url, call=retry.CallPolicy.of(call, **overrides)
        )
        self._credentials: dict[str, str] = {}  # pod id → the registry credential made for it (private images)

    def __repr__(self) -> str:
        return f"RunPodProvider(rest_url={self.client.rest_url!r})"

    # -- offers ---------------------------------------------------------------------------------------------
    def offers(self, req: ResourceRequest) -> list[Offer]:
        # Interruptible (spot) offers are priced at `lowestPrice.minimumBidPrice` per GPU and rented through
        # GraphQL `podRentInterruptable` (v2 has no spot create, §2.3). RunPod removed spot from its docs on
        # 2026-05-06 but kept the fields (§2.8): a type without a bid price simply has no spot offer.
        clouds = [SECURE] if req.secure_cloud_only else [SECURE, COMMUNITY]
        out: list[Offer] = []
        for cloud in clouds:
            for t in self.client.gpu_types(req.gpu_count, cloud == SECURE):
                offer = self._offer(t, cloud, req.gpu_count, spot=req.interruptible)
                if offer is not None and _matches(offer, t, req):
                    out.append(offer)
        return sorted(out, key=lambda o: o.price_per_hour)[: req.limit]

    def _offer(self, t: dict[str, Any], cloud: str, count: int, *, spot: bool = False) -> Offer | None:
        if not t.get("id") or not t.get("secureCloud" if cloud == SECURE else "communityCloud", True):
            return None
        lowest = t.get("lowestPrice") or {}
        price = lowest.get("minimumBidPrice" if spot else "uninterruptablePrice")
        if price is None or lowest.get("stockStatus") in (None, "None"):
            return None  # no machine of this type free in this cloud right now
        return Offer(
            provider=self.name,
            id=offer_id(str(t["id"]), cloud),
            gpu_name=str(t.get("displayName") or t["id"]),
            gpu_count=count,
            vram_gb=float(t.get("memoryInGb") or 0),
            price_per_hour=round(float(price) * count, 6),  # prices are per GPU (§2.2)
            location=str(lowest.get("countryCode") or ""),
            secure_cloud=cloud == SECURE,
            storage_price_gb_month=CONTAINER_DISK_GB_MONTH,
            interruptible=spot,
        )

    # -- lifecycle ------------------------------------------------------------------------------------------
    def create(self, offer: Offer, spec: InstanceSpec) -> Instance:
        if self._key and any(self._key in v for _, v in spec.env):
            raise ValueError("InstanceSpec.env carries the user's RunPod API key; it must never reach the pod")
        _, cloud = parse_offer_id(offer.id)
        registry = self._registry_credential(spec)
        try:
            instance = self._create(offer, spec, cloud, registry)
        except BaseException:
            if registry:  # no pod will pull with it (a pod a failed create left behind is swept and destroyed)
                self._delete_credential(registry)
            raise
        if registry:
            self._credentials[instance.id] = registry
        return instance

    def _registry_credential(self, spec: InstanceSpec) -> str | None:
        """A private image: RunPod pulls it with a stored registry credential, made here from the laptop's Docker
        login for this pod alone (named after its label) and deleted when the pod is destroyed."""
        login = spec.registry_login
        if login is None:
            return None
        return self.client.create_registry_credential(
            f"{spec.label}-{login.registry}"[:120], login.username, login.password
        )

    def _delete_credential(self, credential_id: str) -> None:
        try:
            self.client.delete_registry_credential(credential_id)
        except ProviderError:
            pass  # a stored credential bills nothing; it is named after the job's label for the user to find

    def _create(self, offer: Offer, spec: InstanceSpec, cloud: str, registry: str | None) -> Instance:
        pinned = bool(spec.regions and offer.location)  # the user filtered by region: GraphQL pins the country
        if offer.interruptible or cloud == COMMUNITY or pinned:
            # Community hosts often have no public IP; only GraphQL can ask for one (`supportPublicIp`), and
            # without it SFTP has no way in (see build_deploy_input). The pod is then read through v2 as any other.
            pod_input = build_deploy_input(offer, spec, registry)
            if offer.interruptible:
                pod_input = spot_input(pod_input, offer, spec)
            elif cloud != COMMUNITY:
                pod_input = secure_input(pod_input)
            pod = self.client.deploy_on_demand(pod_input, spot=offer.interruptible)
            return Instance(
                provider=self.name,
                id=str(pod["id"]),
                label=spec.label,
                status=InstanceStatus.PENDING,
                price_per_hour=_float(pod.get("costPerHr")) or offer.price_per_hour,
                gpu_name=offer.gpu_name,
                gpu_count=offer.gpu_count,
                machine=str(pod.get("machineId") or ""),
                extra=(("cloud", cloud),) + ((("spot", "true"),) if offer.interruptible else ()),
            )
        pod = self.client.create_pod(build_create_body(offer, spec, registry))
        inst = to_instance(pod, self.name)
        # The 201 body is the whole Pod; fill what an early answer may leave out.
        return Instance(
            provider=self.name,
            id=inst.id,
            label=inst.label or spec.label,
            status=inst.status,
            ssh=inst.ssh,
            price_per_hour=inst.price_per_hour or offer.price_per_hour,
            gpu_name=inst.gpu_name or offer.gpu_name,
            gpu_count=inst.gpu_count or offer.gpu_count,
            status_message=inst.status_message,
            started_at=inst.started_at,
            extra=inst.extra,
        )

    def get(self, instance_id: str) -> Instance | None:
        pod = self.client.get_pod(instance_id)
        if pod is None:
            self._release_credential(instance_id)  # confirmed gone: its credential can go now
            return None
        return to_instance(pod, self.name)

    def destroy(self, instance_id: str) -> None:
        self.client.delete_pod(instance_id)  # terminate, never stop: stopped volumes bill (§2.5)
        if instance_id in self._credentials:
            # RunPod refuses to delete a credential while its pod exists (400 "in use"): look once, and delete it
            # when the pod is confirmed gone (here, or in a later get() — teardown confirms through get()).
            try:
                self.get(instance_id)
            except ProviderError:
                pass

    def _release_credential(self, instance_id: str) -> None:
        registry = self._credentials.get(instance_id)
        if registry is None:
            return
        try:
            self.client.delete_registry_credential(registry)
        except ProviderError:
            return  # still in use, or the API is flaky: the next confirmation (or `gc`) tries again
        self._credentials.pop(instance_id, None)

    def sweep_credentials(self) -> list[str]:
        """`gc`: delete every `lorarun-*` registry credential whose pod is gone (a controller that died before the
        pod was confirmed gone leaves one behind; it bills nothing, but holds the user's registry token)."""
        live = {str(p.get("name") or "") for p in self.client.list_pods()}
        swept = []
        for cred in self.client.list_registry_credentials():
            name = str(cred.get("name") or "")
            if not name.startswith(LABEL_PREFIX) or any(name.startswith(label + "-") for label in live if label):
                continue
            try:
                self.client.delete_registry_credential(str(cred.get("id")))
            except ProviderError:
                continue  # in use after all (a pod still terminating): the next gc gets it
            swept.append(name)
        return swept

    def list_owned(self) -> list[Instance]:
        # REST v2 has no name filter (§2.6): filter on the `lorarun-` prefix here.
        return [
            to_instance(p, self.name)
            for p in self.client.list_pods()
            if str(p.get("name") or "").startswith(LABEL_PREFIX)
        ]

    def self_destruct(self) -> DestroyPlan:
        """Every pod carries RUNPOD_POD_ID and a pod-scoped RUNPOD_API_KEY (runpod/docs
        `pods/templates/environment-variables.mdx`). Whether REST v2 accepts that key is not documented
        (providers.md §2.7 UNCONFIRMED), so the ways go from the documented API to the pod's own CLI:
        1. v2 `DELETE /v2/pods/{id}` → 204 (runpod/docs `api-reference-v2/openapi.json` deletePod);
        2. GraphQL `podTerminate` — what runpodctl itself sends (runpod/runpodctl `api/pod.go::RemovePod`);
        3. `runpodctl remove pod <id>`: old and new builds (runpod/docs commit 60caf0ed
           `automatically-stop-my-pod.md`: the pod's runpodctl holds a key "scoped to that pod");
        4. `runpodctl pod delete <id>`: builds since early 2026 only (runpod/docs `pods/manage-pods.mdx`).
        Each is confirmed by reading the pod back (v2 GET, else GraphQL `pod`), never by a status code alone."""
        rest, gql = self.client.rest_url, self.client.graphql_url
        return DestroyPlan(
            id_env="RUNPOD_POD_ID",
            key_env="RUNPOD_API_KEY",
            ways=(
                DestroyWay("http", method="DELETE", url=f"{rest}/v2/pods/{{instance_id}}"),
                DestroyWay("graphql", url=gql, query='mutation { podTerminate(input: {podId: "{instance_id}"}) }'),
                DestroyWay("command", argv=("runpodctl", "remove", "pod", "{instance_id}")),
                DestroyWay("command", argv=("runpodctl", "pod", "delete", "{instance_id}")),
            ),
            checks=(
                DestroyCheck("runpod_rest", f"{rest}/v2/pods/{{instance_id}}"),
                DestroyCheck("runpod_graphql", gql),
            ),
        )

    def kill_hint(self, instance_id: str) -> str:
        # `remove pod` works in old and new runpodctl builds; `pod delete` only in new ones (see self_destruct).
        return f"runpodctl remove pod {instance_id}   (or terminate it at https://console.runpod.io/pods)"


# -- pure mapping helpers ----------------------------------------------------------------------------------
def wanted_gpu_type(t: dict[str, Any], wanted: tuple[str, ...]) -> bool:
    """Whether gpuType `t` is one the user asked for: its id is one of the table's exact RunPod ids
    (gpu_names.py); a name the table does not know matches an id or displayName spelled the same way."""
    gid = str(t.get("id") or "")
    for name in wanted:
        m = gpu_names.match(name, gpu_names.RUNPOD)
        if gid in m.names:
            return True
        if not m.known and gpu_names.normalise(name) in (
            gpu_names.normalise(gid),
            gpu_names.normalise(str(t.get("displayName") or "")),
        ):
            return True
    return False


def _matches(offer: Offer, t: dict[str, Any], req: ResourceRequest) -> bool:
    if req.gpu_names and not wanted_gpu_type(t, req.gpu_names):
        return False
    if offer.vram_gb < req.min_vram_gb:
        return False
    if req.max_price_per_hour is not None and offer.price_per_hour > req.max_price_per_hour:
        return False
    max_count = t.get("maxGpuCount")
    if isinstance(max_count, int) and req.gpu_count > max_count:
        return False
    counts = (t.get("lowestPrice") or {}).get("availableGpuCounts")
    if isinstance(counts, list) and counts and req.gpu_count not in counts:
        return False
    if req.regions and offer.location and offer.location.upper() not in {r.upper() for r in req.regions}:
        return False
    return True


def ssh_endpoint(pod: dict[str, Any]) -> SSHEndpoint | None:
    """`ssh.direct`, else the `runtime.ports` entry for private port 22. Never `ssh.proxy`: the proxy is
    interactive only, and uploads need SFTP (§2.4)."""
    direct = (pod.get("ssh") or {}).get("direct") if isinstance(pod.get("ssh"), dict) else None
    if isinstance(direct, dict) and direct.get("host") and direct.get("port"):
        return SSHEndpoint(str(direct["host"]), int(direct["port"]), str(direct.get("username") or "root"))
    runtime = _mapping(pod.get("runtime"))
    for port in runtime.get("ports") or []:
        if not isinstance(port, dict):
            continue
        private = port.get("private", port.get("privatePort"))
        public = port.get("public", port.get("publicPort"))
        if private == 22 and public and port.get("ip") and port.get("type", "tcp") == "tcp" and _public(port):
            return SSHEndpoint(str(port["ip"]), int(public))
    return None


_RUNPOD_INTERNAL = ipaddress.ip_network("100.64.0.0/10")


def _public(port: dict[str, Any]) -> bool:
    """GraphQL says `isIpPublic`; v2's `runtime.ports` has no such flag, and RunPod's proxied ports show
    100.65.x.x addresses (§2.4), which nothing outside RunPod can reach."""
    if port.get("isIpPublic") is False:
        return False
    try:
        return ipaddress.ip_address(str(port["ip"])) not in _RUNPOD_INTERNAL
    except ValueError:
        return True  # a host name


def start_failure(pod: dict[str, Any], ssh: SSHEndpoint | None) -> str:
    """A RUNNING pod whose port 22 is mapped only to a RunPod-internal address will never be reachable for SFTP:
    `ssh.direct` is "Null unless `22/tcp` is in `ports` and the running pod has been assigned a public port"
    and the proxy "carries an interactive shell only — SCP, SFTP, rsync … need `direct`" (runpod/docs
    `api-reference-v2/openapi.json` PodSsh). While port 22 has no runtime entry yet, it may still come."""
    if ssh is not None:
        return ""
    runtime = _mapping(pod.get("runtime"))
    for port in runtime.get("ports") or []:
        if isinstance(port, dict) and port.get("private", port.get("privatePort")) == 22:
            return (
                "no public IP: port 22 is only reachable inside RunPod (Community hosts may lack a public IP), "
                "and uploads need direct SSH"
            )
    return ""


def to_instance(pod: dict[str, Any], provider: str = "runpod") -> Instance:
    status = _STATUS.get(str(pod.get("status") or pod.get("desiredStatus") or "").upper(), InstanceStatus.PENDING)
    gpu = _mapping(pod.get("gpu"))
    ssh = ssh_endpoint(pod) if status is InstanceStatus.RUNNING else None
    failure = start_failure(pod, ssh) if status is InstanceStatus.RUNNING else ""
    extra = [(k, str(pod[k])) for k in ("cloud", "dataCenterId", "cudaVersion") if pod.get(k)]
    return Instance(
        provider=provider,
        id=str(pod.get("id")),
        label=str(pod.get("name") or ""),
        status=status,
        ssh=ssh,
        price_per_hour=float(pod["cost"]) if isinstance(pod.get("cost"), (int, float)) else None,
        gpu_name=str(gpu.get("displayName") or gpu.get("id") or ""),
        gpu_count=int(gpu.get("count") or 0),
        status_message=str(pod.get("lastStatusChange") or pod.get("message") or ""),
        started_at=_epoch(pod.get("startedAt")),
        extra=tuple(extra),
        start_failure=failure,
    )


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _mapping(value: Any) -> dict[str, Any]:
    """A JSON object field, or {} where the body has null or another type there."""
    return value if isinstance(value, dict) else {}


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
