"""Our built image as a container, started as RunPod and as Vast start it: SSH with the job key only, the engine
found by a non-interactive session with no environment from the test, provider variables where the agent reads
them, and the old bare-`python3` assumption failing on the conda-style base."""

from __future__ import annotations

import json
import time

import pytest
from support.container import ContainerHost, InstanceDetails, ssh_run, wait_for_ssh

from lorarun.provider_adapters.vastai.adapter import IMAGE_ONSTART
from lorarun.runner.remote.keys import private_key_path, write_job_keypair
from lorarun.sshlink.transport import REMOTE_PYTHON_EXPR


@pytest.fixture
def keys(tmp_path):
    job_pub = write_job_keypair(tmp_path / "job", "job")
    write_job_keypair(tmp_path / "other", "other")
    return job_pub, private_key_path(tmp_path / "job"), private_key_path(tmp_path / "other")


def start(provider: str, image: str, env: dict, public_key: str, onstart: str = "") -> tuple[ContainerHost, int]:
    host = ContainerHost(provider, lambda _id: InstanceDetails(image, onstart))
    try:
        _, port = host.on_create("i1", env, public_key)
        wait_for_ssh(port)
    except BaseException:
        host.close()
        raise
    return host, port


def wait_for_events(host: ContainerHost, names: set[str], timeout: float = 120.0) -> dict[str, float]:
    deadline, seen = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        code, out = host.exec("i1", "cat /var/log/lorarun/startup.jsonl 2>/dev/null")
        seen = {e["event"]: e["time"] for e in map(json.loads, out.splitlines()) if out.strip()}
        if names <= set(seen):
            return seen
        time.sleep(1)
    raise AssertionError(f"start-up events {sorted(names)} not all written: {seen}")


def test_runpod_start_up_key_only_engine_on_fixed_path(built_image, keys):
    job_pub, job_key, other_key = keys
    env = {
        "PUBLIC_KEY": job_pub,
        "RUNPOD_POD_ID": "pod-abc",
        "RUNPOD_API_KEY": "rpa_pod_secret",
        "LORARUN_DEADLINE": str(int(time.time()) + 3600),
    }
    host, port = start("runpod", built_image, env, job_pub)
    try:
        # The engine's entry points answer in a plain non-interactive session: nothing sent by the client.
        out = ssh_run(port, job_key, "lorarun-engine --help")
        assert out.returncode == 0 and "train" in out.stdout, out.stderr
        resolved = ssh_run(port, job_key, f"printf %s {REMOTE_PYTHON_EXPR}")
        assert resolved.stdout == "/usr/local/bin/lorarun-python"
        out = ssh_run(
            port,
            job_key,
            '/usr/local/bin/lorarun-python -c "import lorarun.image.engine.train, torch; print(torch.__version__)"',
        )
        assert out.returncode == 0, out.stderr
        # The provider variables reach SSH sessions (pam_env reads /etc/environment), PATH is left alone.
        out = ssh_run(port, job_key, "echo $RUNPOD_POD_ID $RUNPOD_API_KEY; echo $PATH")
        first, path = out.stdout.splitlines()
        assert first == "pod-abc rpa_pod_secret" and "/opt/conda" not in path
        # Key only: another key is refused; sshd's effective config has no password or keyboard-interactive login.
        assert ssh_run(port, other_key, "true").returncode == 255
        code, effective = host.exec("i1", "/usr/sbin/sshd -T")
        assert code == 0
        lines = set(effective.splitlines())
        assert {
            "permitrootlogin without-password",
            "passwordauthentication no",
            "kbdinteractiveauthentication no",
        } <= lines, effective
        # The lease watchdog was started by the entrypoint, and the start-up timed itself.
        code, log = host.exec("i1", "cat /var/log/lorarun/startup.log")
        assert "start-up (entrypoint)" in log and "watchdog started" in log, log
        events = wait_for_events(host, {"container_started", "sshd_up", "engine_importable"})
        assert events["container_started"] <= events["sshd_up"] <= events["engine_importable"]
    finally:
        host.close()


def test_vast_ssh_run_type_replaces_the_entrypoint(built_image, keys):
    """Vast's own start-up instead of ours; our start-up runs from onstart, as the Vast adapter asks."""
    job_pub, job_key, other_key = keys
    env = {
        "CONTAINER_ID": "8000001",
        "CONTAINER_API_KEY": "vast-instance-secret",
        "VAST_CONTAINERLABEL": "C.8000001",
        "LORARUN_DEADLINE": str(int(time.time()) + 3600),
        "-p 22:22": "1",
    }
    env.pop("-p 22:22")  # a port-mapping key of Vast's env object, not a variable (the fake strips it too)
    host, port = start("vastai", built_image, env, job_pub, onstart=IMAGE_ONSTART)
    try:
        out = ssh_run(port, job_key, "lorarun-engine --help")
        assert out.returncode == 0, out.stderr
        assert ssh_run(port, other_key, "true").returncode == 255
        code, log = host.exec("i1", "cat /var/log/lorarun/startup.log")
        assert "start-up (onstart)" in log and "start-up (entrypoint)" not in log, log
        assert "watchdog started" in log
        # Our onstart wrote the variables where sessions read them; Vast's start-up alone would not have.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = ssh_run(port, job_key, "echo $CONTAINER_ID $CONTAINER_API_KEY")
            if out.stdout.strip():
                break
            time.sleep(1)
        assert out.stdout.strip() == "8000001 vast-instance-secret"
        # And the agent's other source, PID 1's environment (Vast's init), has them under this start-up too.
        code, environ = host.exec("i1", "tr '\\0' '\\n' < /proc/1/environ")
        assert "CONTAINER_API_KEY=vast-instance-secret" in environ.splitlines()
    finally:
        host.close()


def test_bare_python3_fails_in_an_ssh_session_on_the_conda_style_base(built_image, keys):
    """The old assumption (`${LORARUN_PYTHON:-python3}`) on a real-shaped image: the container's own ENV finds
    Python, an SSH session does not. The fixed path is what makes the engine reachable."""
    job_pub, job_key, _ = keys
    host, port = start("runpod", built_image, {"PUBLIC_KEY": job_pub}, job_pub)
    try:
        code, out = host.exec("i1", "command -v python3")  # docker exec carries the image's ENV PATH
        assert code == 0 and out.strip().startswith("/opt/conda/bin/")
        old = ssh_run(port, job_key, '"${LORARUN_PYTHON:-python3}" -c "import lorarun"')
        assert old.returncode == 127 and "not found" in old.stderr, (old.returncode, old.stderr)
        new = ssh_run(port, job_key, f'{REMOTE_PYTHON_EXPR} -c "import lorarun"')
        assert new.returncode == 0, new.stderr
    finally:
        host.close()
