"""Docker for tests: the instance is a container of our image, started the way each provider starts it.

- `docker_skip_reason()`: why container tests cannot run here (no SDK, no engine), or None.
- `test_base_image()`: the Debian-built stand-in for the PyTorch CUDA base (tests/container/build_base.sh, cached
  per machine by a content tag).
- `engine_image()`: the real Dockerfile built on that base through `lorarun image build`'s own code, cached by its
  content tag (a code change rebuilds only the last layer).
- `ContainerHost`: the machine behind a fake provider. The fakes call `on_create(instance_id, env, public_key)` when
  an instance turns running (tests/fakes/*_server.py); this host answers by starting a container, publishing its
  port 22 on 127.0.0.1 only, and returns that endpoint. How the container starts follows the provider:
    RunPod (`runpod`): the image's ENTRYPOINT runs, with the pod's env (PUBLIC_KEY, RUNPOD_POD_ID, RUNPOD_API_KEY,
      the job's variables) as container variables (RunPod docs, pods/templates/environment-variables; §2.4 of
      reference/providers.md: images read PUBLIC_KEY).
    Vast (`vastai`, ssh/ssh_direct run types): the image's ENTRYPOINT is replaced by Vast's own start-up, modelled
      in tests/container/vast_init.sh (keys into authorized_keys, sshd, then `onstart`; the env only in the
      container's environment, not written for SSH sessions). The keys attached through POST /instances/{id}/ssh/
      are copied into /root/.ssh/authorized_keys before start, as Vast's daemon does, not passed as a variable.
Containers carry the label `lorarun-test=<token>` of their host; `close()` removes them all.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_BASE = REPO / "tests" / "container" / "build_base.sh"
VAST_INIT = REPO / "tests" / "container" / "vast_init.sh"
TEST_LABEL = "lorarun-test"


def docker_skip_reason() -> str | None:
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed"
    try:
        import docker

        docker.from_env(timeout=20).ping()
    except Exception as exc:
        return f"no Docker engine answers ({str(exc).splitlines()[0][:200]}); .ci/run starts one (dockerd, vfs)"
    return None


def client():
    import docker

    return docker.from_env(timeout=900)


def test_base_image() -> str:
    """Build (once per machine) and return the tag of the Debian-built, conda-style test base."""
    out = subprocess.run(["bash", str(BUILD_BASE)], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"building the test base failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def engine_image(base: str) -> str:
    """The real Dockerfile on `base`, built through `lorarun image build`'s code; reused while the tree is unchanged."""
    from lorarun.runner.run import image_build

    tag = image_build.resolve_tag("lorarun-test-engine", None, image_build.content_hash(REPO, base))
    try:
        client().images.get(tag)
        return tag
    except Exception:
        pass
    result = image_build.build(base=base, tag=tag.split(":")[0], root=REPO)
    _prune_old("lorarun-test-engine", keep=result.tag)
    return result.tag


def _prune_old(repository: str, keep: str) -> None:
    """Earlier builds of the test image: under the vfs driver each costs GBs of disk."""
    c = client()
    for image in c.images.list(name=repository):
        if keep not in image.tags:
            try:
                c.images.remove(image.id, force=True)
            except Exception:
                pass


@dataclass(frozen=True)
class InstanceDetails:
    image: str
    onstart: str = ""


class ContainerHost:
    """Containers as the instances of a fake provider (see the module docstring)."""

    def __init__(self, provider: str, details: Callable[[str], InstanceDetails]):
        assert provider in ("runpod", "vastai")
        self.provider = provider
        self.details = details
        self.token = uuid.uuid4().hex[:12]
        self.containers: dict[str, object] = {}
        self.started_images: list[str] = []  # the image of each container started, in order
        self.docker = client()

    # -- the fakes' hooks ------------------------------------------------------------------------------------
    def on_create(self, instance_id: str, env: dict | tuple, public_key: str) -> tuple[str, int]:
        env = dict(env)
        info = self.details(instance_id)
        common = dict(
            detach=True,
            labels={TEST_LABEL: self.token, "lorarun-test-instance": instance_id},
            name=f"lorarun-test-{self.token}-{instance_id}"[:60],
            ports={"22/tcp": ("127.0.0.1", None)},
            environment=env,
            mem_limit="6g",
        )
        if self.provider == "runpod":
            container = self.docker.containers.create(info.image, **common)
        else:
            container = self.docker.containers.create(
                info.image, entrypoint=["/bin/sh", "/.vast/init.sh"], command=[], **common
            )
            files = {".vast/init.sh": VAST_INIT.read_bytes(), "root/onstart.sh": info.onstart.encode()}
            if public_key.strip():
                files["root/.ssh/authorized_keys"] = (public_key.strip() + "\n").encode()
            container.put_archive("/", _tar(files))
        container.start()
        self.containers[instance_id] = container
        self.started_images.append(info.image)
        return "127.0.0.1", self._published_port(container)

    def on_destroy(self, instance_id: str) -> None:
        container = self.containers.pop(instance_id, None)
        if container is not None:
            try:
                container.remove(force=True, v=True)
            except Exception:
                pass

    # -- what tests look at ----------------------------------------------------------------------------------
    def alive(self, instance_id: str) -> bool:
        container = self.containers.get(instance_id)
        if container is None:
            return False
        try:
            container.reload()
        except Exception:
            return False
        return container.status == "running"

    def exec(self, instance_id: str, command: str) -> tuple[int, str]:
        code, out = self.containers[instance_id].exec_run(["/bin/sh", "-c", command])
        return code, out.decode(errors="replace")

    def close(self) -> None:
        for instance_id in list(self.containers):
            self.on_destroy(instance_id)
        for container in self.docker.containers.list(all=True, filters={"label": f"{TEST_LABEL}={self.token}"}):
            try:
                container.remove(force=True, v=True)
            except Exception:
                pass

    def _published_port(self, container, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            container.reload()
            bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
            for binding in bindings.get("22/tcp") or []:
                if binding.get("HostPort"):
                    assert binding.get("HostIp") in ("127.0.0.1", ""), binding  # loopback only
                    return int(binding["HostPort"])
            if container.status == "exited":
                raise RuntimeError(f"container exited at start: {container.logs()[-2000:].decode(errors='replace')}")
            time.sleep(0.2)
        raise RuntimeError("the container's port 22 was not published")


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = set()
        for name in files:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o700 if d.endswith(".ssh") else 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600 if "ssh" in name else 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def wait_for_ssh(port: int, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(2)
                if s.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"no SSH on 127.0.0.1:{port}")


def ssh_run(port: int, key: Path, command: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """A non-interactive OpenSSH session, as the controller's: no -t, no environment sent (SendEnv none)."""
    return subprocess.run(
        [
            "ssh",
            "-p",
            str(port),
            "-i",
            str(key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "PasswordAuthentication=no",
            "root@127.0.0.1",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"},
    )
