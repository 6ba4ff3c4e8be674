"""The `local` provider: this machine, at no cost. An "instance" is a staging folder under the lorarun home;
destroying it ends the job's processes and removes the folder, exactly like a rented machine going away."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from lorarun.image.destroy_plan import DestroyPlan
from lorarun.provider_adapters.base import LABEL_PREFIX, Instance, InstanceSpec, InstanceStatus, Offer, ResourceRequest


def _local_gpu() -> tuple[str, int, float]:
    """(name, count, VRAM GB) from nvidia-smi, or a CPU description when there is no NVIDIA GPU."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            rows = [r.split(",") for r in out.strip().splitlines() if r.strip()]
            if rows:
                return rows[0][0].strip(), len(rows), float(rows[0][1]) / 1024
        except (subprocess.SubprocessError, ValueError, IndexError):
            pass
    return f"CPU ({os.cpu_count()} cores)", 0, 0.0


class LocalProvider:
    name = "local"

    def __init__(self, root: Path):
        self.root = root  # $LORARUN_HOME/local: one folder per "instance"

    def instance_dir(self, instance_id: str) -> Path:
        return self.root / instance_id

    def offers(self, req: ResourceRequest) -> list[Offer]:
        gpu, count, vram = _local_gpu()
        return [
            Offer(
                provider=self.name,
                id="localhost",
                gpu_name=gpu,
                gpu_count=count,
                vram_gb=vram,
                price_per_hour=0.0,
                reliability=1.0,
                location="this machine",
                has_image_cached=True,
            )
        ]

    def create(self, offer: Offer, spec: InstanceSpec) -> Instance:
        instance_id = spec.label
        folder = self.instance_dir(instance_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".label").write_text(spec.label, encoding="utf-8")
        return self._instance(instance_id)

    def get(self, instance_id: str) -> Instance | None:
        return self._instance(instance_id) if self.instance_dir(instance_id).is_dir() else None

    def destroy(self, instance_id: str) -> None:
        folder = self.instance_dir(instance_id)
        if not folder.is_dir():
            return  # not found is success
        for pid_file in folder.rglob("agent.pid"):
            _kill_group(pid_file)
        shutil.rmtree(folder, ignore_errors=True)

    def list_owned(self) -> list[Instance]:
        if not self.root.is_dir():
            return []
        return [
            self._instance(p.name)
            for p in sorted(self.root.iterdir())
            if p.is_dir() and p.name.startswith(LABEL_PREFIX)
        ]

    def self_destruct(self) -> DestroyPlan | None:
        return None  # nothing bills; the agent simply exits after its grace window

    def kill_hint(self, instance_id: str) -> str:
        return f"lorarun down {instance_id.removeprefix(LABEL_PREFIX)}  (or remove {self.instance_dir(instance_id)})"

    def _instance(self, instance_id: str) -> Instance:
        gpu, count, _ = _local_gpu()
        folder = self.instance_dir(instance_id)
        started = folder.stat().st_mtime if folder.exists() else None
        return Instance(
            provider=self.name,
            id=instance_id,
            label=instance_id,
            status=InstanceStatus.RUNNING,
            price_per_hour=0.0,
            gpu_name=gpu,
            gpu_count=count,
            started_at=started,
            extra=(("workdir", str(folder)),),
        )


def _kill_group(pid_file: Path) -> None:
    """The agent leads its own process group (engine included): TERM it, then KILL what is left."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _reap(pid: int) -> None:
    """The agent started by this very process (the local transport's detached start) is our child: once it exits it
    stays a zombie until waited for, and a zombie still answers `killpg(pid, 0)`, so the loop above would wait out
    its full 10 s + 2 s on an agent that ended at once. An agent of an earlier controller is not our child: nothing
    to reap."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
