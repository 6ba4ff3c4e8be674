"""RunPod request bodies and offer ids: pure functions of an Offer and an InstanceSpec (providers.md §2.3).

An Offer's id is `"<gpuTypeId>::<SECURE|COMMUNITY>"`: RunPod rents a GPU type in a cloud, not a machine, and the
gpuTypeId itself contains spaces but never "::" (e.g. "NVIDIA GeForce RTX 4090"). SECURE pods are created through
REST v2 (`build_create_body`), COMMUNITY pods through GraphQL `podFindAndDeployOnDemand` (`build_deploy_input`),
spot pods through GraphQL `podRentInterruptable` (`spot_input`).
"""

from __future__ import annotations

from typing import Any

from lorarun.image.base_cuda import cuda_text
from lorarun.provider_adapters.base import InstanceSpec, Offer

SEP = "::"
SECURE, COMMUNITY = "SECURE", "COMMUNITY"


def offer_id(gpu_type_id: str, cloud: str) -> str:
    return f"{gpu_type_id}{SEP}{cloud}"


def parse_offer_id(value: str) -> tuple[str, str]:
    """(gpuTypeId, cloud) from an Offer id; a bare gpuTypeId means SECURE (RunPod's own default, §2.3)."""
    gpu, sep, cloud = value.rpartition(SEP)
    if not sep:
        return value, SECURE
    if cloud not in (SECURE, COMMUNITY):
        raise ValueError(f"not a RunPod offer id: {value!r}")
    return gpu, cloud


def build_create_body(offer: Offer, spec: InstanceSpec, registry: str | None = None) -> dict[str, Any]:
    """The REST v2 `POST /v2/pods` body (§2.3).

    v2 names (`gpu.count`, `cloud`, `disk`) replace v1's `gpuCount`, `cloudType`, `containerDiskInGb`; v2
    rejects unknown properties with 422, so v1-only fields (`volumeInGb`, `supportPublicIp`) are not sent.
    No `mounts` means no persistent volume: nothing keeps billing once the pod is terminated (v1 silently
    added 20 GB). v2 has no way to ask for a public IP (no `supportPublicIp` in CreatePodRequest, runpod/docs
    `api-reference-v2/openapi.json`), so this body is for SECURE pods, which "will always have a public IP"
    (runpod/docs `api-reference/openapi.json` PodCreateInput.supportPublicIp); COMMUNITY pods go through
    `build_deploy_input`.
    """
    gpu_type, cloud = parse_offer_id(offer.id)
    env = dict(spec.env)
    env["PUBLIC_KEY"] = spec.ssh_public_key  # the per-job key; sshd in the image reads PUBLIC_KEY (§2.4)
    body: dict[str, Any] = {
        "name": spec.label,
        "image": spec.image,
        # Always send the count: leaving it out fails every create with a misleading 400 (§2.3, RPMCP).
        # The image's CUDA runtime at least (CreateGpuConfig.minCudaVersion, runpod/docs `api-reference-v2/openapi.json`;
        # providers.md §2.3): a host with an older driver is not picked, rather than a pod that never starts.
        "gpu": {"id": gpu_type, "count": max(1, offer.gpu_count), "minCudaVersion": cuda_text()},
        "cloud": cloud,
        "disk": max(1, round(spec.disk_gb)),
        "ports": ["22/tcp"],  # SFTP needs direct SSH on a public TCP port (§2.4)
        "env": env,
    }
    if spec.onstart:
        body["args"] = spec.onstart  # a string handed to the image's ENTRYPOINT (§2.3)
    if registry:
        body["registry"] = registry  # "Container registry credential ID (for private images)" (v2 createPod)
    return body


def build_deploy_input(offer: Offer, spec: InstanceSpec, registry: str | None = None) -> dict[str, Any]:
    """The GraphQL `PodFindAndDeployOnDemandInput` for a COMMUNITY pod (dstackai/dstack
    `backends/runpod/api_client.py::generate_pod_deployment_mutation`; runpod/runpod-python
    `api/mutations/pods.py`): `supportPublicIp: true` — "If the created Pod is on Community Cloud, set to true if
    you need the Pod to expose a public IP address. If null, the Pod might not have a public IP address."
    (runpod/docs `api-reference/openapi.json` PodCreateInput.supportPublicIp). `ports` is a comma-separated
    string and `env` a list of {key, value} here (providers.md §2.3); `volumeInGb: 0` so no volume outlives it."""
    gpu_type, _ = parse_offer_id(offer.id)
    env = dict(spec.env)
    env["PUBLIC_KEY"] = spec.ssh_public_key
    pod_input: dict[str, Any] = {
        "cloudType": COMMUNITY,
        "gpuTypeId": gpu_type,
        "gpuCount": max(1, offer.gpu_count),
        "name": spec.label,
        "imageName": spec.image,
        "containerDiskInGb": max(1, round(spec.disk_gb)),
        "volumeInGb": 0,
        "ports": "22/tcp",
        "supportPublicIp": True,
        "minCudaVersion": cuda_text(),  # as dstack sends it (dstackai/dstack `runpod/api_client.py`; providers.md §2.3)
        "env": [{"key": k, "value": v} for k, v in env.items()],
    }
    if spec.regions and offer.location:
        # Pinned to the country the offer was found in when the user filtered by region: `countryCode` of
        # PodFindAndDeployOnDemandInput (runpod/runpod-python `api/mutations/pods.py`; providers.md §2.3). Without
        # it RunPod places the pod on any host of the type, anywhere.
        pod_input["countryCode"] = offer.location
    if spec.onstart:
        pod_input["dockerArgs"] = spec.onstart  # replaces the image's CMD, as v2's `args` does
    if registry:
        pod_input["containerRegistryAuthId"] = registry  # PodFindAndDeployOnDemandInput (runpod-python, dstack)
    return pod_input


def secure_input(pod_input: dict[str, Any]) -> dict[str, Any]:
    """The deploy input for a SECURE on-demand pod pinned to a country: v2's create cannot pin one (its
    CreatePodRequest has only `dataCenterIds`; `countryCodes` is v1's and a 422, runpod/docs
    `api-reference-v2/openapi.json`), GraphQL can. A Secure pod always has a public IP."""
    out = dict(pod_input, cloudType=SECURE)
    out.pop("supportPublicIp", None)
    return out


def spot_input(pod_input: dict[str, Any], offer: Offer, spec: InstanceSpec) -> dict[str, Any]:
    """`PodRentInterruptableInput`: the on-demand input in the offer's own cloud, plus `bidPerGpu` — the machine's
    bid divided by its GPUs, as dstack does (dstackai/dstack `backends/runpod/compute.py::run_job`:
    `bid_per_gpu = instance_offer.price / gpu_count`). A Secure spot pod has a public IP like any Secure pod."""
    _, cloud = parse_offer_id(offer.id)
    bid = spec.bid_price_per_hour or offer.price_per_hour
    out = dict(pod_input, cloudType=cloud, bidPerGpu=round(bid / max(1, offer.gpu_count), 4))
    if cloud == SECURE:
        out.pop("supportPublicIp", None)
    return out
