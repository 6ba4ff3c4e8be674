"""The instance destroying itself (image/instance/self_destroy.py): several ways in order, each confirmed by reading the
instance back, against a recording server, the fake Vast and the fake RunPod APIs over real HTTP on 127.0.0.1,
and an old-style `runpodctl` script on PATH."""

from __future__ import annotations

import json
import logging
import socket
import sys
import urllib.request
from pathlib import Path

import pytest
from fakes.runpod_server import API_KEY as RP_KEY
from fakes.runpod_server import FakeRunPod
from fakes.vast_server import API_KEY as VAST_KEY
from fakes.vast_server import FakeVast

from lorarun.image.destroy_plan import RUNPOD_REST, DestroyCheck, DestroyPlan, DestroyWay
from lorarun.image.instance import self_destroy as sd
from lorarun.image.instance.self_destroy import HttpResult, SelfDestroyer
from lorarun.provider_adapters.runpod.adapter import RunPodProvider
from lorarun.provider_adapters.vastai.adapter import VastProvider

from .conftest import FakeClock, make_config, read_events

KEY = "instance-key-s3cr3t-0123456789"


def plan(provider) -> DestroyPlan:
    """What the controller hands the agent: the adapter's plan through its JSON contract (runner/run/training.py)."""
    return DestroyPlan.from_dict(json.loads(json.dumps(provider.self_destruct().to_dict())))


def destroyer(config: DestroyPlan, environ: dict, clock: FakeClock | None = None, **kw) -> SelfDestroyer:
    return SelfDestroyer(
        config, environ=environ, proc_environ=Path("/nonexistent"), sleep=(clock or FakeClock()).sleep, **kw
    )


def one_delete(url: str) -> DestroyPlan:
    return DestroyPlan("CONTAINER_ID", "CONTAINER_API_KEY", (DestroyWay("http", method="DELETE", url=url),))


# -- the procedure, against a recording server -----------------------------------------------------------------------
def test_retries_rate_limits_and_server_errors_with_backoff(http_server):
    http_server.statuses = [429, 503]
    clock = FakeClock()
    out = destroyer(
        one_delete(http_server.url + "/api/v0/instances/{instance_id}/"),
        {"CONTAINER_ID": "3", "CONTAINER_API_KEY": KEY},
        clock,
    ).destroy()
    assert (out.ok, out.confirmed, out.via, out.attempts) == (True, False, "http", 3)  # no check: unconfirmed
    assert clock.sleeps[-2:] == [2.0, 4.0]


def test_a_rejected_key_gives_up_at_once(http_server):
    http_server.statuses = [401]
    out = destroyer(
        one_delete(http_server.url + "/x/{instance_id}"), {"CONTAINER_ID": "3", "CONTAINER_API_KEY": KEY}
    ).destroy()
    assert not out.ok and len(http_server.requests) == 1 and "HTTP 401" in out.error


def test_without_the_instance_key_nothing_is_sent(http_server):
    out = destroyer(one_delete(http_server.url + "/x/{instance_id}"), {"CONTAINER_ID": "3"}).destroy()
    assert not out.ok and http_server.requests == [] and "CONTAINER_API_KEY not set" in out.error


def test_a_404_alone_is_not_gone():
    """A wrong route answers 404 too (a v1 base URL, a proxy): without a check that saw the pod, it proves nothing."""
    calls = []

    def http(method, url, headers, json_body=None):
        calls.append((method, url))
        return HttpResult(404, "not found", {"title": "Not Found", "status": 404, "detail": "resource not found"})

    config = DestroyPlan(
        "RUNPOD_POD_ID",
        "RUNPOD_API_KEY",
        (DestroyWay("http", method="DELETE", url="https://api.example/v2/pods/{instance_id}"),),
        (DestroyCheck(RUNPOD_REST, "https://api.example/v2/pods/{instance_id}"),),
    )
    out = destroyer(config, {"RUNPOD_POD_ID": "ab c/d", "RUNPOD_API_KEY": KEY}, http=http).destroy()
    assert not out.ok and not out.confirmed
    assert ("DELETE", "https://api.example/v2/pods/ab%20c%2Fd") in calls  # the id is quoted into the path


def test_a_404_on_a_route_that_showed_the_pod_is_gone():
    answers = iter(
        [
            HttpResult(200, "", {"id": "p1", "status": "RUNNING"}),  # the check sees it first
            HttpResult(204, ""),  # DELETE
            HttpResult(404, "", {"title": "Not Found", "status": 404, "detail": "resource not found"}),
        ]
    )
    config = DestroyPlan(
        "RUNPOD_POD_ID",
        "RUNPOD_API_KEY",
        (DestroyWay("http", method="DELETE", url="https://api.example/v2/pods/{instance_id}"),),
        (DestroyCheck(RUNPOD_REST, "https://api.example/v2/pods/{instance_id}"),),
    )
    out = destroyer(
        config, {"RUNPOD_POD_ID": "p1", "RUNPOD_API_KEY": KEY}, http=lambda *a, **k: next(answers)
    ).destroy()
    assert (out.ok, out.confirmed, out.via) == (True, True, "http")


def test_vast_2xx_with_success_false_is_a_refusal():
    """Vast's error shape `{"success": false, ...}` can come with a 2xx (providers.md §1.9)."""
    refusal = HttpResult(200, '{"success": false}', {"success": False, "error": "invalid_args", "msg": "no"})
    out = destroyer(
        one_delete("https://v.example/api/v0/instances/{instance_id}/"),
        {"CONTAINER_ID": "3", "CONTAINER_API_KEY": KEY},
        http=lambda *a, **k: refusal,
    ).destroy()
    assert not out.ok and "success=false" in out.error


def test_the_legacy_agent_json_shape_still_reads():
    old = {
        "method": "delete",
        "url": "https://x/{instance_id}",
        "id_env": "A",
        "key_env": "B",
        "fallback_command": ["runpodctl", "remove", "pod", "{instance_id}"],
    }
    config = DestroyPlan.from_dict(old)
    assert [w.kind for w in config.ways] == ["http", "command"] and config.ways[0].method == "DELETE"
    assert DestroyPlan.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# -- against the fake Vast -------------------------------------------------------------------------------------------
def test_vast_instance_destroys_itself_with_its_own_key(tmp_path):
    with FakeVast() as fake:
        req = urllib.request.Request(
            f"{fake.url}/api/v0/asks/1001/",
            method="PUT",
            data=json.dumps({"image": "lorarun:test", "disk": 20}).encode(),
            headers={"Authorization": f"Bearer {VAST_KEY}", "Content-Type": "application/json"},
        )
        created = json.loads(urllib.request.urlopen(req, timeout=10).read())
        iid, ikey = str(created["new_contract"]), created["instance_api_key"]
        out = destroyer(
            plan(VastProvider(VAST_KEY, base_url=fake.url)), {"CONTAINER_ID": iid, "CONTAINER_API_KEY": ikey}
        ).destroy()
        assert out.ok and out.via == "http" and iid not in fake.live_ids()
        assert [r.token() for r in fake.requests_to("DELETE", "/api/v0/instances/")] == [ikey]
        # The instance key may not read the instance in the fake (Vast documents it for start/stop/destroy only):
        # so the destroy is reported as accepted but unconfirmed, never as confirmed by a status code.
        assert not out.confirmed


# -- against the fake RunPod -----------------------------------------------------------------------------------------
def make_pod(fake: FakeRunPod) -> tuple[str, str]:
    body = {"name": "lorarun-job42", "image": "lorarun:test", "gpu": {"id": next(iter(fake.gpu_types)), "count": 1}}
    req = urllib.request.Request(
        f"{fake.url}/v2/pods",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {RP_KEY}", "Content-Type": "application/json"},
    )
    pod_id = json.loads(urllib.request.urlopen(req, timeout=10).read())["id"]
    return pod_id, fake.pods[pod_id].pod_key


def runpodctl_old(bin_dir: Path, graphql_url: str) -> Path:
    """An old runpodctl on PATH: `remove pod <id>` works (GraphQL podTerminate with $RUNPOD_API_KEY, as
    runpod/runpodctl `api/pod.go::RemovePod` does); `pod delete` does not exist in old builds."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "runpodctl"
    script.write_text(f"""#!{sys.executable}
import json, os, sys, urllib.request
args = sys.argv[1:]
open({str(bin_dir / "calls.jsonl")!r}, 'a').write(json.dumps(args) + "\\n")
if args[:2] != ["remove", "pod"] or len(args) != 3:
    sys.stderr.write('Error: unknown command "%s" for "runpodctl"\\n' % args[0])
    sys.exit(1)
q = 'mutation {{ podTerminate(input: {{podId: "%s"}}) }}' % args[2]
req = urllib.request.Request({graphql_url!r}, data=json.dumps({{"query": q}}).encode(), method="POST",
                             headers={{"Authorization": "Bearer " + os.environ["RUNPOD_API_KEY"],
                                      "Content-Type": "application/json"}})
body = json.loads(urllib.request.urlopen(req, timeout=10).read())
if body.get("errors"):
    sys.stderr.write(body["errors"][0]["message"] + "\\n")
    sys.exit(1)
print('pod "%s" removed' % args[2])
""")
    script.chmod(0o755)
    return bin_dir


def test_runpod_v2_refuses_the_pod_key_so_graphql_terminates_and_a_read_confirms(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeRunPod() as fake:  # pod_key_v2=False: v2 refuses the pod-scoped key
        pod_id, pod_key = make_pod(fake)
        config = make_config(
            tmp_path,
            "fail",
            grace_seconds=0,
            self_destruct=plan(RunPodProvider(RP_KEY, rest_url=fake.url, graphql_url=fake.url + "/graphql")),
        )
        from .test_agent import make_agent

        proc_environ = tmp_path / "environ"  # RunPod's variables may be missing in SSH sessions (§2.7)
        proc_environ.write_bytes(f"RUNPOD_POD_ID={pod_id}\0RUNPOD_API_KEY={pod_key}\0".encode())
        assert make_agent(tmp_path, config, FakeClock(), proc_environ=proc_environ).run() == 0

        assert pod_id not in fake.live_ids() and pod_id in fake.destroyed
        deletes = fake.requests_to("DELETE", "/v2/pods/")
        assert [r.token() for r in deletes] == [pod_key]  # tried first, refused with 403
        event = next(e for e in read_events(config.output_dir) if e["event"] == "self_destroy")
        assert (event["ok"], event["confirmed"], event["via"]) == (True, True, "graphql")
        assert "HTTP 403" in event["tried"][0]
        assert RP_KEY not in caplog.text and pod_key not in caplog.text
        assert pod_key not in (tmp_path / "job" / "status.json").read_text()


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/graphql"  # closed as soon as the block ends


def test_old_runpodctl_remove_pod_is_the_way_when_the_apis_do_not_answer(tmp_path):
    with FakeRunPod() as fake:
        pod_id, pod_key = make_pod(fake)
        full = plan(RunPodProvider(RP_KEY, rest_url=fake.url, graphql_url=fake.url + "/graphql"))
        # The agent's own GraphQL endpoint unreachable; runpodctl has its own (and the checks still read).
        ways = tuple(
            DestroyWay("graphql", url=dead_url(), query=w.query) if w.kind == "graphql" else w for w in full.ways
        )
        config = DestroyPlan(full.id_env, full.key_env, ways, full.checks)
        bin_dir = runpodctl_old(tmp_path / "bin", fake.url + "/graphql")
        out = destroyer(config, {"PATH": str(bin_dir), "RUNPOD_POD_ID": pod_id, "RUNPOD_API_KEY": pod_key}).destroy()

        assert (out.ok, out.confirmed, out.via) == (True, True, "command")
        assert pod_id in fake.destroyed
        calls = [json.loads(line) for line in (bin_dir / "calls.jsonl").read_text().splitlines()]
        assert calls == [["remove", "pod", pod_id]]  # the old-and-new syntax first; `pod delete` never needed


def test_when_nothing_works_the_agent_says_so_loudly(tmp_path, caplog):
    with FakeRunPod(pod_key_graphql=False) as fake:  # the pod key refused everywhere
        pod_id, pod_key = make_pod(fake)
        config = make_config(
            tmp_path,
            "fail",
            grace_seconds=0,
            self_destruct=plan(RunPodProvider(RP_KEY, rest_url=fake.url, graphql_url=fake.url + "/graphql")),
        )
        from .test_agent import make_agent

        bin_dir = tmp_path / "empty-bin"
        bin_dir.mkdir()
        rc = make_agent(
            tmp_path,
            config,
            FakeClock(),
            environ={"PATH": str(bin_dir), "RUNPOD_POD_ID": pod_id, "RUNPOD_API_KEY": pod_key},
        ).run()

        assert rc == 1 and pod_id in fake.live_ids()
        event = next(e for e in read_events(config.output_dir) if e["event"] == "self_destroy")
        assert event["ok"] is False and len(event["tried"]) == 4
        assert "HTTP 403" in event["tried"][0] and "HTTP 401" in event["tried"][1]
        assert all("FileNotFoundError" in t for t in event["tried"][2:])
        assert "SELF-DESTRUCT FAILED" in caplog.text and pod_key not in caplog.text
        status = json.loads((tmp_path / "job" / "status.json").read_text())
        assert status["message"].startswith("self-destruct failed")


@pytest.mark.parametrize(
    "status_code, verdict",
    [
        (200, "accepted"),
        (204, "accepted"),
        (404, "not_found"),
        (None, "retry"),
        (429, "retry"),
        (500, "retry"),
        (400, "give_up"),
        (401, "give_up"),
        (403, "give_up"),
    ],
)
def test_destroy_outcome(status_code, verdict):
    assert sd.destroy_outcome(HttpResult(status_code, "")) == verdict


def test_vast_null_instances_before_the_instance_was_seen_still_sends_the_delete():
    """`{"instances": null}` is also what Vast answers for an id the key cannot see (providers.md §1.4): it means gone
    only after the check saw the instance, so the DELETE always goes out; `?owner=me` as vast-cli sends it."""
    from lorarun.image.destroy_plan import VAST_SHOW

    calls = []
    answers = iter(
        [
            HttpResult(200, "", {"instances": None}),  # the first look: not seen yet → unknown, not gone
            HttpResult(200, "", {"success": True}),  # DELETE
            HttpResult(200, "", {"instances": {"id": 7, "actual_status": "running"}}),  # still there: seen
            HttpResult(200, "", {"instances": None}),  # now gone
        ]
    )

    def http(method, url, headers, json_body=None):
        calls.append((method, url))
        return next(answers)

    config = DestroyPlan(
        "CONTAINER_ID",
        "CONTAINER_API_KEY",
        (DestroyWay("http", method="DELETE", url="https://v.example/api/v0/instances/{instance_id}/"),),
        (DestroyCheck(VAST_SHOW, "https://v.example/api/v0/instances/{instance_id}/?owner=me"),),
    )
    out = destroyer(config, {"CONTAINER_ID": "7", "CONTAINER_API_KEY": KEY}, http=http).destroy()
    assert (out.ok, out.confirmed) == (True, True)
    assert ("DELETE", "https://v.example/api/v0/instances/7/") in calls
    assert calls[0] == ("GET", "https://v.example/api/v0/instances/7/?owner=me")
