"""The fakes answer requests shaped exactly like providers.md's (and the official clients') the documented way.

Raw `urllib` calls with the documents' bodies, not our adapters: if an adapter and its fake shared a mistake,
these tests would still catch the fake drifting from the reference.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from fakes.runpod_server import API_KEY as RP_KEY
from fakes.vast_server import API_KEY as VAST_KEY

from .source_examples import (
    RUNPOD_403,
    RUNPOD_404,
    RUNPOD_422_DETAIL,
    RUNPOD_CREATE_EXAMPLE,
    RUNPOD_DEPLOY_INPUT,
    RUNPOD_DEPLOY_KEYS,
    RUNPOD_DEPLOY_MUTATION,
    RUNPOD_NO_CAPACITY,
    RUNPOD_POD_EXAMPLE,
    RUNPOD_V1_ONLY_FIELDS,
    VAST_CREATE_EXAMPLE,
    VAST_DESTROY_404,
    VAST_FILTER_ONLY_KEYS,
    VAST_OFFER_KEYS,
    VAST_SEARCH_EXAMPLE,
)


def call(method: str, url: str, body=None, key: str | None = None, raw: bytes | None = None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, hdrs, payload = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, payload = e.code, dict(e.headers), e.read()
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload.decode()
    return status, {k.lower(): v for k, v in hdrs.items()}, parsed


# ============================================ Vast.ai (§1) ===================================================
DOC_SEARCH = {  # providers.md §1.2, verbatim
    "verified": {"eq": True},
    "external": {"eq": False},
    "rentable": {"eq": True},
    "rented": {"eq": False},
    "gpu_name": {"in": ["RTX 4090", "RTX 3090"]},
    "num_gpus": {"eq": 1},
    "gpu_ram": {"gte": 24000},
    "reliability": {"gte": 0.98},
    "inet_down": {"gte": 200},
    "disk_space": {"gte": 50},
    "direct_port_count": {"gte": 1},
    "cuda_max_good": {"gte": 12.1},
    "dph_total": {"lte": 0.6},
    "geolocation": {"in": ["US", "CA"]},
    "order": [["dph_total", "asc"]],
    "type": "on-demand",
    "limit": 20,
    "allocated_storage": 50,
}


def test_vast_search_doc_body(vast):
    status, _, body = call("POST", f"{vast.url}/api/v0/bundles/", DOC_SEARCH)  # no key: gpuhunt does this
    assert status == 200 and set(body) == {"offers"}
    offers = body["offers"]
    assert [o["id"] for o in offers] == [1001]  # 1002 fails reliability, 1003 is in DE, 1006 has no port
    o = offers[0]
    assert VAST_OFFER_KEYS <= set(o) and not VAST_FILTER_ONLY_KEYS & set(o)
    assert o["gpu_ram"] == 24564 and isinstance(o["driver_version"], str)  # MB; version is a string
    assert o["dph_total"] == pytest.approx(o["dph_base"] + 50 * o["storage_cost"] / 720)  # storage folded in


@pytest.mark.parametrize("kind", ["on-demand", "ondemand", "bid", "interruptible", "reserved"])
def test_vast_search_type_spellings(vast, kind):
    status, _, body = call("POST", f"{vast.url}/api/v0/bundles/", {"type": kind, "limit": 3}, key=VAST_KEY)
    assert status == 200 and len(body["offers"]) == 3
    default_order = call("POST", f"{vast.url}/api/v0/bundles/", {})[2]["offers"]
    assert [o["score"] for o in default_order] == sorted((o["score"] for o in default_order), reverse=True)


def test_vast_search_errors(vast):
    status, _, body = call("POST", f"{vast.url}/api/v0/bundles/", raw=b"{not json")
    assert status == 400 and body == {"error": "invalid_request", "msg": "Invalid json body"}
    status, _, body = call("POST", f"{vast.url}/api/v0/bundles/", {}, key="bad")
    assert status == 404 and body["msg"] == "Invalid user key"


def create_body(**kw):
    # §1.3 / VCLI: env as an object with the port mapping as a key, the CLI's truncated runtype spelling.
    body = {
        "client_id": "me",
        "image": "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime",
        "disk": 10.0,
        "env": {"HF_TOKEN": "x", "-p 8000:8000": "1"},
        "runtype": "ssh_direc ssh_proxy",
        "onstart": "touch ~/.no_auto_tmux",
        "label": "lorarun-7f3a",
    }
    body.update(kw)
    return body


def test_vast_create_success_and_taken_offer(vast):
    status, _, body = call("PUT", f"{vast.url}/api/v0/asks/1001/", create_body(), key=VAST_KEY)
    assert status == 200 and body["success"] is True
    assert isinstance(body["new_contract"], int) and isinstance(body["instance_api_key"], str)
    status, _, body = call("PUT", f"{vast.url}/api/v0/asks/1001/", create_body(), key=VAST_KEY)
    assert status == 410 and body["error"] == "no_such_ask" and body["success"] is False and "ask_id" in body
    status, _, body = call("PUT", f"{vast.url}/api/v0/asks/424242/", create_body(), key=VAST_KEY)
    assert status == 404 and "no_such_ask" in body["msg"] and "3603" in body["msg"]


@pytest.mark.parametrize(
    "bad", [{"env": "-e A=1 -p 22:22"}, {"image": ""}, {"disk": 4}, {"runtype": "bogus"}, {"price": 500}]
)
def test_vast_create_validation(vast, bad):
    status, _, body = call("PUT", f"{vast.url}/api/v0/asks/1001/", create_body(**bad), key=VAST_KEY)
    assert status == 400 and body["success"] is False and body["error"] == "invalid_args"
    assert not vast.offers[1001]["rented"]


def test_vast_create_needs_key_header_or_query(vast):
    status, _, body = call("PUT", f"{vast.url}/api/v0/asks/1001/", create_body())
    assert status == 401 and body == {"success": False, "error": "auth_error", "msg": "Invalid user key"}
    status, _, body = call("PUT", f"{vast.url}/api/v0/asks/1001/?api_key={VAST_KEY}", create_body())
    assert status == 200 and body["success"] is True


def test_vast_show_lifecycle_destroy(vast):
    iid = call("PUT", f"{vast.url}/api/v0/asks/1003/", create_body(), key=VAST_KEY)[2]["new_contract"]
    url = f"{vast.url}/api/v0/instances/{iid}/?owner=me"
    statuses = []
    for _ in range(4):
        status, _, body = call("GET", url, key=VAST_KEY)
        assert status == 200 and isinstance(body["instances"], dict)
        statuses.append(body["instances"]["actual_status"])
    assert statuses == [None, "loading", "running", "running"]
    inst = body["instances"]
    for f in (
        "id",
        "machine_id",
        "intended_status",
        "cur_state",
        "next_state",
        "status_msg",
        "label",
        "image_uuid",
        "image_runtype",
        "ssh_host",
        "ssh_port",
        "public_ipaddr",
        "gpu_name",
        "num_gpus",
        "dph_total",
        "disk_space",
        "start_date",
        "extra_env",
        "is_bid",
    ):
        assert f in inst, f
    assert inst["label"] == "lorarun-7f3a" and ["HF_TOKEN", "x"] in inst["extra_env"]
    assert isinstance(inst["ports"]["22/tcp"][0]["HostPort"], str)  # a string, per §1.4
    assert "ssh_direc" in inst["image_runtype"]
    status, _, body = call("DELETE", f"{vast.url}/api/v0/instances/{iid}/", {}, key=VAST_KEY)
    assert status == 200 and body["success"] is True
    assert call("GET", url, key=VAST_KEY)[2] == {"instances": None}
    status, _, body = call("DELETE", f"{vast.url}/api/v0/instances/{iid}/", {}, key=VAST_KEY)
    assert status == 404 and body["error"] == "no_such_instance"
    assert call("DELETE", f"{vast.url}/api/v0/instances/abc/", {}, key=VAST_KEY)[2]["msg"] == "invalid instance_id"
    assert call("GET", f"{vast.url}/api/v0/instances/", key=VAST_KEY)[2] == {"instances": None}


def test_vast_attach_ssh_key(vast):
    iid = call("PUT", f"{vast.url}/api/v0/asks/1001/", create_body(), key=VAST_KEY)[2]["new_contract"]
    status, _, body = call(
        "POST", f"{vast.url}/api/v0/instances/{iid}/ssh/", {"ssh_key": "ssh-ed25519 AAAA x"}, key=VAST_KEY
    )
    assert status == 200 and body == {"success": True, "msg": "SSH key attached successfully"}
    status, _, body = call("POST", f"{vast.url}/api/v0/instances/{iid}/ssh/", {}, key=VAST_KEY)
    assert status == 400 and body == {"success": False, "error": "no_ssh_key", "msg": "No ssh key provided"}


def test_vast_label_and_stop(vast):
    iid = call("PUT", f"{vast.url}/api/v0/asks/1001/", create_body(), key=VAST_KEY)[2]["new_contract"]
    status, _, body = call("PUT", f"{vast.url}/api/v0/instances/{iid}/", {"label": "lorarun-x"}, key=VAST_KEY)
    assert status == 200 and body["msg"] == f"label for {iid} set to 'lorarun-x'"
    status, _, body = call("PUT", f"{vast.url}/api/v0/instances/{iid}/", {"label": "x" * 2000}, key=VAST_KEY)
    assert status == 400 and body["error"] == "label_too_long"
    stop = call("PUT", f"{vast.url}/api/v0/instances/{iid}/", {"state": "stopped"}, key=VAST_KEY)
    assert stop[2] == {"success": True}
    inst = call("GET", f"{vast.url}/api/v0/instances/{iid}/", key=VAST_KEY)[2]["instances"]
    assert inst["actual_status"] == "stopped" and inst["intended_status"] == "stopped"


def test_vast_v1_list(vast):
    for ask in (1001, 1002, 1003):
        call("PUT", f"{vast.url}/api/v0/asks/{ask}/", create_body(label=f"lorarun-{ask}"), key=VAST_KEY)
    q = urllib.parse.urlencode({"select_filters": json.dumps({"label": {"eq": "lorarun-1002"}}), "limit": 25})
    status, _, body = call("GET", f"{vast.url}/api/v1/instances/?{q}", key=VAST_KEY)
    assert status == 200 and body["success"] is True and body["next_token"] is None
    assert [i["label"] for i in body["instances"]] == ["lorarun-1002"]
    assert {"instances_found", "total_instances", "label_counts"} <= set(body)
    page = call("GET", f"{vast.url}/api/v1/instances/?limit=2", key=VAST_KEY)[2]
    assert len(page["instances"]) == 2 and page["next_token"]
    rest = call("GET", f"{vast.url}/api/v1/instances/?limit=2&after_token={page['next_token']}", key=VAST_KEY)[2]
    assert len(rest["instances"]) == 1 and rest["next_token"] is None
    assert len(call("GET", f"{vast.url}/api/v1/instances/?limit=0", key=VAST_KEY)[2]["instances"]) == 3  # ≤0 → 5
    q = urllib.parse.urlencode({"select_filters": json.dumps({"dph_total": {"lte": 1}})})
    status, _, body = call("GET", f"{vast.url}/api/v1/instances/?{q}", key=VAST_KEY)
    assert status == 400 and "not a valid search key" in body["msg"]
    status, _, body = call("GET", f"{vast.url}/api/v1/instances/?after_token=%25%25", key=VAST_KEY)
    assert status == 400 and body["error"] == "invalid_token"


def test_vast_injected_429_is_plain_text_without_retry_after(vast):
    vast.fail_next("DELETE", "/api/v0/instances/", status=429)
    status, headers, body = call("DELETE", f"{vast.url}/api/v0/instances/1/", {}, key=VAST_KEY)
    assert status == 429 and "retry-after" not in headers and body.startswith("API requests too frequent")


# ============================================ RunPod (§2) ====================================================
def test_runpod_gpu_types_public_query(runpod):
    q = "query { gpuTypes { id displayName memoryInGb secureCloud communityCloud } }"  # §2.2, no key
    status, _, body = call("POST", f"{runpod.url}/graphql", {"query": q})
    assert status == 200
    row = body["data"]["gpuTypes"][0]
    assert set(row) == {"id", "displayName", "memoryInGb", "secureCloud", "communityCloud"}  # only what was asked
    assert row["id"] == "NVIDIA GeForce RTX 4090" and row["memoryInGb"] == 24


def test_runpod_gpu_types_lowest_price_variables_and_inline(runpod):
    q = (
        "query GpuTypes($lowestPriceInput: GpuLowestPriceInput, $gpuTypesInput: GpuTypeFilter) {"
        " gpuTypes(input: $gpuTypesInput) { id displayName memoryInGb maxGpuCount securePrice communityPrice"
        " lowestPrice(input: $lowestPriceInput) { uninterruptablePrice minimumBidPrice stockStatus"
        " availableGpuCounts minVcpu minMemory countryCode } } }"
    )
    variables = {
        "gpuTypesInput": {"id": "NVIDIA GeForce RTX 4090"},
        "lowestPriceInput": {"gpuCount": 1, "secureCloud": True},
    }
    body = call("POST", f"{runpod.url}/graphql", {"query": q, "variables": variables})[2]
    [row] = body["data"]["gpuTypes"]
    assert row["securePrice"] == 0.69 and row["lowestPrice"]["uninterruptablePrice"] == 0.69
    assert row["lowestPrice"]["stockStatus"] in ("High", "Medium", "Low")
    inline = (
        'query { gpuTypes(input: {id: "NVIDIA H100 80GB HBM3"}) { id lowestPrice(input: {gpuCount: 1, '
        "secureCloud: false}) { uninterruptablePrice stockStatus } } }"
    )
    [h100] = call("POST", f"{runpod.url}/graphql", {"query": inline})[2]["data"]["gpuTypes"]
    assert h100["lowestPrice"] == {
        "uninterruptablePrice": None,
        "minimumBidPrice": None,
        "stockStatus": None,
        "availableGpuCounts": [],
        "minVcpu": None,
        "minMemory": None,
        "countryCode": None,
    }  # no community H100


def test_runpod_graphql_auth_and_errors(runpod):
    q = "query { myself { id clientBalance currentSpendPerHr spendLimit } }"
    assert call("POST", f"{runpod.url}/graphql", {"query": q})[0] == 401
    assert call("POST", f"{runpod.url}/graphql", {"query": q}, key="wrong")[0] == 401
    status, _, body = call("POST", f"{runpod.url}/graphql?api_key={RP_KEY}", {"query": q})  # the docs' curl form
    assert status == 200 and body["data"]["myself"]["clientBalance"] == 50.0
    term = 'mutation { podTerminate(input: {podId: "nope"}) }'
    status, _, body = call("POST", f"{runpod.url}/graphql", {"query": term}, key=RP_KEY)
    assert status == 200 and body["errors"][0]["message"] == "pod not found to terminate"
    assert body["errors"][0]["extensions"]["code"] == "RUNPOD" and body["data"] == {"podTerminate": None}


DOC_POD = {  # providers.md §2.3, verbatim
    "name": "lorarun-7f3a",
    "image": "myorg/lora-trainer:1.2",
    "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1, "minCudaVersion": "12.4"},
    "cloud": "SECURE",
    "dataCenterIds": ["US-TX-3"],
    "disk": 50,
    "mounts": {"persistent": {"size": 20, "path": "/workspace"}},
    "ports": ["22/tcp"],
    "env": {"PUBLIC_KEY": "ssh-ed25519 AAAA... lorarun"},
    "startSsh": True,
    "args": "",
}


def test_runpod_create_doc_body_then_poll_and_delete(runpod):
    status, headers, pod = call("POST", f"{runpod.url}/v2/pods", DOC_POD, key=RP_KEY)
    assert status == 201 and pod["status"] == "PROVISIONING" and pod["name"] == "lorarun-7f3a"
    assert pod["ssh"]["direct"] is None and pod["ssh"]["proxy"]["host"] == "ssh.runpod.io"
    assert pod["gpu"] == {"id": "NVIDIA GeForce RTX 4090", "count": 1}  # GpuConfig: id and count only
    assert pod["runtime"] is None and pod["cost"] == 0.69 and "terminate" in pod["actions"]
    assert "ratelimit" in headers and "ratelimit-policy" in headers
    url = f"{runpod.url}/v2/pods/{pod['id']}"
    statuses = [call("GET", url, key=RP_KEY)[2]["status"] for _ in range(3)]
    assert statuses == ["PROVISIONING", "STARTING", "RUNNING"]
    running = call("GET", url, key=RP_KEY)[2]
    assert set(running["ssh"]["direct"]) == {"host", "port", "username", "command"}
    [port] = running["runtime"]["ports"]
    assert port["private"] == 22 and port["type"] == "tcp" and port["public"] == running["ssh"]["direct"]["port"]
    assert [p["id"] for p in call("GET", f"{runpod.url}/v2/pods", key=RP_KEY)[2]["pods"]] == [pod["id"]]
    status, _, body = call("DELETE", url, key=RP_KEY)
    assert status == 204 and body is None
    status, headers, body = call("GET", url, key=RP_KEY)
    assert status == 404 and body == {"title": "Not Found", "status": 404, "detail": "resource not found"}
    assert headers["content-type"] == "application/problem+json"


def test_runpod_create_errors(runpod):
    status, headers, body = call("POST", f"{runpod.url}/v2/pods", dict(DOC_POD, bogus=1), key=RP_KEY)
    assert status == 422 and body["detail"] == "Request validation failed."
    assert body["errors"] == ["$: additional properties 'bogus' not allowed"]
    assert headers["content-type"] == "application/problem+json"
    no_count = dict(DOC_POD, gpu={"id": "NVIDIA GeForce RTX 4090"})
    assert call("POST", f"{runpod.url}/v2/pods", no_count, key=RP_KEY)[0] == 400  # the RPMCP finding
    both = dict(
        DOC_POD,
        gpu={"id": "NVIDIA GeForce RTX 4090", "count": 1, "minCudaVersion": "12.4", "allowedCudaVersions": ["12.4"]},
    )
    assert call("POST", f"{runpod.url}/v2/pods", both, key=RP_KEY)[0] == 400
    status, _, body = call("POST", f"{runpod.url}/v2/pods", DOC_POD)
    assert status == 401 and body == {"title": "Unauthorized", "status": 401, "detail": "missing bearer token"}
    runpod.set_capacity("NVIDIA GeForce RTX 4090", "SECURE", 0)
    status, _, body = call("POST", f"{runpod.url}/v2/pods", DOC_POD, key=RP_KEY)
    assert status == 400 and "no longer any instances available" in body["detail"]
    runpod.fail_next("POST", "/v2/pods", status=429)
    status, headers, body = call("POST", f"{runpod.url}/v2/pods", DOC_POD, key=RP_KEY)
    assert status == 429 and headers["retry-after"].isdigit() and body["title"] == "Too Many Requests"


def test_runpod_actions(runpod):
    pod = call("POST", f"{runpod.url}/v2/pods", DOC_POD, key=RP_KEY)[2]
    runpod.run_now(pod["id"])
    url = f"{runpod.url}/v2/pods/{pod['id']}/action"
    status, _, body = call("POST", url, {"action": "stop"}, key=RP_KEY)
    assert status == 200 and body["status"] == "EXITED" and body["cost"] == 0.0
    assert body["actions"] == ["start", "terminate"]
    assert call("POST", url, {"action": "stop"}, key=RP_KEY)[0] == 409
    assert call("POST", url, {"action": "terminate"}, key=RP_KEY)[0] == 204
    assert runpod.live_ids() == []


# ============================ the sources' own examples, replayed (tests/provider_adapters/source_examples.py) ================
def test_vast_docs_search_example(vast):
    status, _, body = call("POST", f"{vast.url}/api/v0/bundles/", VAST_SEARCH_EXAMPLE)
    assert status == 200
    rows = body["offers"]
    assert rows and all(r["verification"] == "verified" for r in rows)  # `verified` filters on `verification`
    assert all(VAST_OFFER_KEYS <= set(r) and not VAST_FILTER_ONLY_KEYS & set(r) for r in rows)
    secure = call("POST", f"{vast.url}/api/v0/bundles/", {"datacenter": {"eq": True}})[2]["offers"]
    assert secure and all(r["hosting_type"] == 1 for r in secure)


def test_vast_docs_create_example_then_destroy_twice(vast):
    status, _, body = call("PUT", f"{vast.url}/api/v0/asks/1003/", VAST_CREATE_EXAMPLE, key=VAST_KEY)
    assert status == 200 and body["success"] is True
    iid = body["new_contract"]
    assert call("DELETE", f"{vast.url}/api/v0/instances/{iid}/", {}, key=VAST_KEY)[2] == {"success": True}
    status, _, body = call("DELETE", f"{vast.url}/api/v0/instances/{iid}/", {}, key=VAST_KEY)
    # The docs' example says `not_found`; dstack's live code matches `no_such_instance` (providers.md §1.5).
    assert status == 404 and set(body) == set(VAST_DESTROY_404) and body["error"] in ("not_found", "no_such_instance")


def test_vast_destroy_can_answer_200_with_success_false(vast):
    iid = call("PUT", f"{vast.url}/api/v0/asks/1001/", create_body(), key=VAST_KEY)[2]["new_contract"]
    vast.destroy_refusals = 1
    status, _, body = call("DELETE", f"{vast.url}/api/v0/instances/{iid}/", {}, key=VAST_KEY)
    assert status == 200 and body["success"] is False and str(iid) in vast.live_ids()
    assert call("DELETE", f"{vast.url}/api/v0/instances/{iid}/", {}, key=VAST_KEY)[2] == {"success": True}


def test_vast_oci_failure_stays_created_with_the_runtime_error(vast):
    vast.start_failures[1001] = "oci"
    iid = call("PUT", f"{vast.url}/api/v0/asks/1001/", create_body(), key=VAST_KEY)[2]["new_contract"]
    for _ in range(3):
        inst = call("GET", f"{vast.url}/api/v0/instances/{iid}/", key=VAST_KEY)[2]["instances"]
        assert inst["actual_status"] == "created" and ": OCI runtime create failed:" in inst["status_msg"]


def test_vast_outbid_is_stopped_in_all_three_states(vast):
    vast.start_failures[1002] = "outbid"
    iid = call("PUT", f"{vast.url}/api/v0/asks/1002/", create_body(), key=VAST_KEY)[2]["new_contract"]
    inst = call("GET", f"{vast.url}/api/v0/instances/{iid}/", key=VAST_KEY)[2]["instances"]
    assert inst["cur_state"] == inst["intended_status"] == inst["next_state"] == "stopped"


def test_vast_silent_direct_port_leaves_the_proxy(vast):
    vast.direct_ssh_silent = True
    iid = call("PUT", f"{vast.url}/api/v0/asks/1001/", create_body(), key=VAST_KEY)[2]["new_contract"]
    vast.run_now(iid)
    inst = call("GET", f"{vast.url}/api/v0/instances/{iid}/", key=VAST_KEY)[2]["instances"]
    direct = int(inst["ports"]["22/tcp"][0]["HostPort"])
    assert direct != inst["ssh_port"] and inst["ssh_host"] == vast.instances[iid].host


def test_runpod_docs_create_example_and_pod_shape(runpod):
    status, _, pod = call("POST", f"{runpod.url}/v2/pods", RUNPOD_CREATE_EXAMPLE, key=RP_KEY)
    assert status == 201
    runpod.run_now(pod["id"])
    running = call("GET", f"{runpod.url}/v2/pods/{pod['id']}", key=RP_KEY)[2]
    assert set(running) == set(RUNPOD_POD_EXAMPLE)  # every field of the spec's own example, no others
    assert set(running["gpu"]) == set(RUNPOD_POD_EXAMPLE["gpu"]) and "uptime" in running["runtime"]
    assert "uptimeInSeconds" not in running["runtime"]  # GraphQL's name, not v2's
    assert set(running["ssh"]) == set(RUNPOD_POD_EXAMPLE["ssh"])


@pytest.mark.parametrize("field", RUNPOD_V1_ONLY_FIELDS)
def test_runpod_v2_create_refuses_v1_fields(runpod, field):
    status, headers, body = call(
        "POST", f"{runpod.url}/v2/pods", dict(RUNPOD_CREATE_EXAMPLE, **{field: True}), key=RP_KEY
    )
    assert status == 422 and body["detail"] == RUNPOD_422_DETAIL
    assert body["errors"] == [f"$: additional properties '{field}' not allowed"]
    assert headers["content-type"] == "application/problem+json"


def test_runpod_v2_create_takes_registry_and_refuses_extra_gpu_fields(runpod):
    assert call("POST", f"{runpod.url}/v2/pods", dict(RUNPOD_CREATE_EXAMPLE, registry="cred1"), key=RP_KEY)[0] == 201
    bad_gpu = dict(RUNPOD_CREATE_EXAMPLE, gpu={"id": "NVIDIA GeForce RTX 4090", "count": 1, "displayName": "x"})
    assert call("POST", f"{runpod.url}/v2/pods", bad_gpu, key=RP_KEY)[0] == 422


def test_runpod_forbidden_pool_is_a_403_problem(runpod):
    runpod.forbidden.add(("NVIDIA GeForce RTX 4090", "SECURE"))
    status, _, body = call("POST", f"{runpod.url}/v2/pods", RUNPOD_CREATE_EXAMPLE, key=RP_KEY)
    assert status == 403 and body == RUNPOD_403


def test_runpod_community_pod_from_v2_has_no_public_ip(runpod):
    body = dict(RUNPOD_CREATE_EXAMPLE, cloud="COMMUNITY", ports=["22/tcp"])
    pod = call("POST", f"{runpod.url}/v2/pods", body, key=RP_KEY)[2]
    runpod.run_now(pod["id"])
    running = call("GET", f"{runpod.url}/v2/pods/{pod['id']}", key=RP_KEY)[2]
    assert running["status"] == "RUNNING" and running["ssh"]["direct"] is None
    [port] = running["runtime"]["ports"]
    assert port["private"] == 22 and port["ip"].startswith("100.65.")  # RunPod-internal only


def test_runpod_graphql_deploy_with_support_public_ip(runpod):
    status, _, body = call(
        "POST",
        f"{runpod.url}/graphql",
        {"query": RUNPOD_DEPLOY_MUTATION, "variables": {"input": RUNPOD_DEPLOY_INPUT}},
        key=RP_KEY,
    )
    assert status == 200 and "errors" not in body
    pod = body["data"]["podFindAndDeployOnDemand"]
    assert RUNPOD_DEPLOY_KEYS <= set(pod) and pod["env"] == ["JUPYTER_PASSWORD=your-password"]
    runpod.run_now(pod["id"])
    running = call("GET", f"{runpod.url}/v2/pods/{pod['id']}", key=RP_KEY)[2]
    assert running["cloud"] == "COMMUNITY" and running["ssh"]["direct"] is not None  # a public IP, as asked
    runpod.set_capacity("NVIDIA GeForce RTX 3090", "COMMUNITY", 0)
    body = call(
        "POST",
        f"{runpod.url}/graphql",
        {"query": RUNPOD_DEPLOY_MUTATION, "variables": {"input": RUNPOD_DEPLOY_INPUT}},
        key=RP_KEY,
    )[2]
    assert body["errors"][0]["message"] == RUNPOD_NO_CAPACITY and body["data"] == {"podFindAndDeployOnDemand": None}
    assert body["errors"][0]["extensions"]["code"] == "RUNPOD"
    bad = dict(RUNPOD_DEPLOY_INPUT, gpuTypeIdList=["x"])
    body = call(
        "POST", f"{runpod.url}/graphql", {"query": RUNPOD_DEPLOY_MUTATION, "variables": {"input": bad}}, key=RP_KEY
    )[2]
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_runpod_list_pages_with_next_cursor(runpod):
    runpod.page_size = 2
    ids = {
        call("POST", f"{runpod.url}/v2/pods", dict(RUNPOD_CREATE_EXAMPLE, name=f"p{i}"), key=RP_KEY)[2]["id"]
        for i in range(5)
    }
    seen, cursor, pages = set(), None, 0
    while True:
        url = f"{runpod.url}/v2/pods" + (f"?cursor={cursor}" if cursor else "")
        body = call("GET", url, key=RP_KEY)[2]
        pages += 1
        seen |= {p["id"] for p in body["pods"]}
        cursor = body["pagination"]["nextCursor"]
        if not cursor:
            break
    assert seen == ids and pages == 3


def test_runpod_unknown_pod_is_the_specs_404(runpod):
    status, _, body = call("GET", f"{runpod.url}/v2/pods/nope", key=RP_KEY)
    assert status == 404 and body == RUNPOD_404
