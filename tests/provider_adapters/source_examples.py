"""Examples copied from the providers' own sources, replayed against the fakes by test_fake_faithful.py.

Each constant names its source (repository, commit, path). If a fake drifts from these, the fake is wrong.
"""

from __future__ import annotations

# ---- Vast.ai ---------------------------------------------------------------------------------------------------------
# vast-ai/docs c6246226 `api-reference/openapi/yaml/search_offers.yaml` requestBody example.
VAST_SEARCH_EXAMPLE = {
    "limit": 100,
    "type": "on-demand",
    "verified": {"eq": True},
    "rentable": {"eq": True},
    "rented": {"eq": False},
}
# The same file's response example: one offer row. Only the keys matter here (the values are made up there).
VAST_OFFER_KEYS = {
    "id",
    "ask_contract_id",
    "bundle_id",
    "compute_cap",
    "cpu_cores",
    "cpu_cores_effective",
    "cpu_ram",
    "cuda_max_good",
    "direct_port_count",
    "disk_bw",
    "disk_space",
    "dlperf",
    "dlperf_per_dphtotal",
    "dph_base",
    "dph_total",
    "driver_version",
    "duration",
    "end_date",
    "external",
    "geolocation",
    "gpu_frac",
    "gpu_name",
    "gpu_ram",
    "gpu_total_ram",
    "host_id",
    "hosting_type",
    "inet_down",
    "inet_down_cost",
    "inet_up",
    "inet_up_cost",
    "is_bid",
    "machine_id",
    "min_bid",
    "public_ipaddr",
    "reliability",
    "rentable",
    "rented",
    "score",
    "static_ip",
    "storage_cost",
    "verification",
    "reliability2",
}
# Keys that rows do NOT carry although queries filter on them (vast-ai/vast-python `offers_fields`).
VAST_FILTER_ONLY_KEYS = {"verified", "datacenter"}
# vast-ai/docs c6246226 `api-reference/openapi/yaml/create_instance.yaml` requestBody example.
VAST_CREATE_EXAMPLE = {"image": "vastai/base-image:@vastai-automatic-tag"}
# vast-ai/docs c6246226 `api-reference/openapi/yaml/destroy_instance.yaml` 404 example.
VAST_DESTROY_404 = {"success": False, "error": "not_found", "msg": "Instance not found"}

# ---- RunPod REST v2 --------------------------------------------------------------------------------------------------
# runpod/docs a900806e `api-reference-v2/openapi.json` paths./v2/pods.post.requestBody examples.gpuPod.
RUNPOD_CREATE_EXAMPLE = {
    "name": "pytorch-training",
    "image": "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404",
    "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1},
    "disk": 50,
}
# The same file, paths./v2/pods/{id}.get.responses.200 example (a RUNNING pod).
RUNPOD_POD_EXAMPLE = {
    "id": "7h9k2m4n6p",
    "name": "pytorch-training",
    "image": "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404",
    "args": "",
    "disk": 50,
    "ports": ["8888/http", "22/tcp"],
    "env": {"MODEL_NAME": "llama-3"},
    "registry": None,
    "status": "RUNNING",
    "actions": ["stop", "restart", "terminate"],
    "mounts": {"persistent": {"size": 20, "path": "/workspace"}},
    "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1},
    "cloud": "SECURE",
    "dataCenterId": "US-KS-2",
    "cudaVersion": "12.8",
    "ssh": {
        "proxy": {
            "host": "ssh.runpod.io",
            "port": 22,
            "username": "7h9k2m4n6p-64411eb2",
            "command": "ssh 7h9k2m4n6p-64411eb2@ssh.runpod.io",
        },
        "direct": {
            "host": "195.26.233.3",
            "port": 34446,
            "username": "root",
            "command": "ssh root@195.26.233.3 -p 34446",
        },
    },
    "template": "9x4m2p7v",
    "cost": 0.44,
    "locked": False,
    "globalNetworking": {"enabled": False},
    "runtime": {"uptime": 3600, "ports": [{"private": 22, "public": 34446, "type": "tcp", "ip": "195.26.233.3"}]},
    "createdAt": "2026-06-01T12:00:00Z",
    "startedAt": "2026-06-01T12:02:00Z",
}
# components.responses.*.examples (problem+json).
RUNPOD_404 = {"title": "Not Found", "status": 404, "detail": "resource not found"}
RUNPOD_403 = {"title": "Forbidden", "status": 403, "detail": "access denied"}
RUNPOD_422_DETAIL = "Request validation failed."
# v1 PodCreateInput fields that v2's CreatePodRequest does not have (components.schemas.CreatePodRequest).
RUNPOD_V1_ONLY_FIELDS = ("countryCodes", "locked", "containerRegistryAuthId", "supportPublicIp", "volumeInGb")

# ---- RunPod GraphQL --------------------------------------------------------------------------------------------------
# runpod/runpodctl `api/pod.go` (typed variables) with the input fields dstack sends for a public IP
# (dstackai/dstack `backends/runpod/api_client.py::generate_pod_deployment_mutation`).
RUNPOD_DEPLOY_MUTATION = (
    "mutation createPod($input: PodFindAndDeployOnDemandInput!) { podFindAndDeployOnDemand("
    "input: $input) { id imageName env machineId desiredStatus costPerHr machine { podHostId } } }"
)
RUNPOD_DEPLOY_INPUT = {
    "cloudType": "COMMUNITY",
    "gpuTypeId": "NVIDIA GeForce RTX 3090",
    "gpuCount": 1,
    "name": "lorarun-7f3a",
    "imageName": "runpod/tensorflow",
    "containerDiskInGb": 40,
    "volumeInGb": 0,
    "ports": "22/tcp",
    "supportPublicIp": True,
    "startSsh": True,
    "env": [{"key": "JUPYTER_PASSWORD", "value": "your-password"}],
}
# runpod/docs `sdks/graphql/manage-pods.mdx` response example: the keys of the deployed pod.
RUNPOD_DEPLOY_KEYS = {"id", "imageName", "env", "machineId", "machine"}
# issue runpod/runpod-python#21: the capacity error, verbatim.
RUNPOD_NO_CAPACITY = (
    "There are no longer any instances available with the requested specifications. Please refresh and try again."
)
