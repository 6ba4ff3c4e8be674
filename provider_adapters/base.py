"""The one interface every provider adapter implements, and the values that cross it.

Adapters know nothing of jobs: they rent, describe and destroy machines. They return fast and never sleep
(retries with backoff live in `retry.py`, waiting lives in the controller's poller).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from lorarun.image.base_cuda import BASE_CUDA
from lorarun.image.destroy_plan import DestroyPlan

LABEL_PREFIX = "lorarun-"


def job_label(job_id: str) -> str:
    """The label/name every instance of a job carries, so `list_owned()` and `gc` can find it."""
    return f"{LABEL_PREFIX}{job_id}"


class InstanceStatus(enum.Enum):
    PENDING = "pending"  # accepted, not yet scheduled / image pulling ("loading", PROVISIONING, STARTING)
    RUNNING = "running"  # container up; SSH may still need a few seconds
    STOPPED = "stopped"  # exited/stopped: still bills storage, so lorarun destroys it
    ERROR = "error"  # provider reports a failure (status_msg / ERROR)
    TERMINATED = "terminated"  # gone or going; no longer billing


@dataclass(frozen=True)
class ResourceRequest:
    """What a job needs from a machine. Units are human ones (GB, $/h); adapters convert (Vast wants MB)."""

    gpu_names: tuple[str, ...] = ()  # empty = any GPU; names as users write them ("RTX 4090", "A100")
    gpu_count: int = 1
    min_vram_gb: float = 0.0
    max_price_per_hour: float | None = None
    min_reliability: float = 0.0
    min_inet_down_mbps: float = 0.0
    min_cuda: float = BASE_CUDA  # the image's CUDA runtime (image/base_cuda.py)
    disk_gb: float = 40.0
    interruptible: bool = False
    secure_cloud_only: bool = False
    regions: tuple[str, ...] = ()  # 2-letter country codes
    limit: int = 20


@dataclass(frozen=True)
class Offer:
    """A rentable machine at a live price. `id` is what `create()` takes (Vast ask id, RunPod gpuTypeId)."""

    provider: str
    id: str
    gpu_name: str
    gpu_count: int
    vram_gb: float  # per GPU
    price_per_hour: float  # whole machine, storage for the requested disk included where the API folds it in
    reliability: float | None = None
    inet_down_mbps: float | None = None
    inet_up_mbps: float | None = None
    cuda_version: float | None = None
    location: str = ""
    interruptible: bool = False
    secure_cloud: bool | None = None
    storage_price_gb_month: float = 0.0  # billed on top of price_per_hour (0 where already folded in)
    has_image_cached: bool = False
    ram_gb: float | None = None  # system memory of the machine (share) rented; None = the provider does not say
    machine: str = ""  # the physical host where the provider says (Vast machine_id): a failed one is skipped


@dataclass(frozen=True)
class SSHEndpoint:
    host: str
    port: int
    username: str = "root"


@dataclass(frozen=True)
class RegistryLogin:
    """Credentials the provider uses to pull a private image (never sent to the instance). From Docker's own
    config on the laptop (runner/run/image_build.py `registry_login`); the token never shows in a repr or log."""

    registry: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class InstanceSpec:
    """How to start the machine. `ssh_public_key` is the per-job key; `env` must never carry the user's API key."""

    label: str
    image: str
    disk_gb: float
    ssh_public_key: str
    env: tuple[tuple[str, str], ...] = ()
    onstart: str = ""
    bid_price_per_hour: float | None = None  # interruptible only
    registry_login: RegistryLogin | None = None  # a private image: the provider pulls with it (Vast image_login)
    # The user's region filter (resources.regions): the create is pinned to the offer's country, not just any host
    # of that GPU type (RunPod); a Vast offer is one machine already.
    regions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Instance:
    provider: str
    id: str
    label: str
    status: InstanceStatus
    ssh: SSHEndpoint | None = None  # set once the provider reports a direct SSH port
    price_per_hour: float | None = None
    gpu_name: str = ""
    gpu_count: int = 0
    status_message: str = ""
    started_at: float | None = None  # unix seconds, when the provider says so
    extra: tuple[tuple[str, str], ...] = field(default=())  # provider-specific facts worth showing the user
    # Set when the provider's own fields say this instance will never come up (Vast "created" with an OCI error,
    # outbid; RunPod running without a public IP): the controller destroys it at once and tries another offer
    # instead of waiting out the boot timeout on the bill.
    start_failure: str = ""
    machine: str = ""  # as Offer.machine
    ssh_fallbacks: tuple[SSHEndpoint, ...] = ()  # other ways to the same sshd (Vast's proxy gateway)


@runtime_checkable
class Provider(Protocol):
    name: str

    def offers(self, req: ResourceRequest) -> list[Offer]:
        """Live offers matching `req`, cheapest first. No side effects."""
        ...

    def create(self, offer: Offer, spec: InstanceSpec) -> Instance:
        """Rent `offer`. Returns at once (never waits for boot).

        Raises `CreateFailed` carrying `instance_id` when the provider answered with an error *and* an id
        (Vast's `new_contract` on a failed bid), so the caller can record and destroy it.
        """
        ...

    def get(self, instance_id: str) -> Instance | None:
        """Current state, or None once the provider no longer knows the instance."""
        ...

    def destroy(self, instance_id: str) -> None:
        """Terminate (never merely stop: stopped instances bill storage). "Not found" is success."""
        ...

    def list_owned(self) -> list[Instance]:
        """Every instance whose label starts with `lorarun-`."""
        ...

    def self_destruct(self) -> DestroyPlan | None:
        """How the on-instance agent can destroy its own machine; None where it cannot (plain SSH, local)."""
        ...

    def kill_hint(self, instance_id: str) -> str:
        """A command or URL the user can use to kill the instance by hand if lorarun cannot confirm it."""
        ...
