"""The `ssh` provider: a machine the user owns (a workstation with a GPU, a box at home, a reserved server).

Nothing is rented, so nothing bills: `create()` hands back the host at once, and `destroy()` only removes the
job's folder (`${LORARUN_WORKDIR:-$HOME/lorarun}/<job_id>`) and ends the job's processes (the agent's process
group, from `<job folder>/agent.pid`) — never the machine, never anything outside that folder.

Keys: a per-job key cannot be installed on a host lorarun does not provision, so this provider (and the
pipeline's SSH session to it, see `key_path`) uses the user's own key. `InstanceSpec.ssh_public_key` and
`InstanceSpec.env` are ignored here; the user's key never leaves the laptop, only its signature does.
The host key is pinned in `known_hosts` (lorarun's own file, not ~/.ssh/known_hosts) on first use.

Instance ids are job labels (`lorarun-<job_id>`), like the `local` provider's.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorarun.provider_adapters.base import (
    LABEL_PREFIX,
    Instance,
    InstanceSpec,
    InstanceStatus,
    Offer,
    ResourceRequest,
    SSHEndpoint,
)
from lorarun.provider_adapters.errors import AuthError, ProviderError, ProviderMisconfigured, TransientError
from lorarun.provider_adapters.retry import DEFAULT_POLICY, RetryPolicy, call
from lorarun.sshlink.errors import (
    AuthenticationFailed,
    ConnectionLost,
    HostKeyChanged,
    RemoteCommandError,
    RemoteError,
    RemoteTimeout,
)
from lorarun.sshlink.session import RetryPolicy as LinkRetry
from lorarun.sshlink.session import SSHParams, SSHTransport
from lorarun.sshlink.transport import REMOTE_WORKDIR_EXPR

CPU_ONLY = "none (CPU only)"
# Killing a job on the user's machine is cheap to retry but the host may be asleep: about two minutes.
DESTROY_POLICY = RetryPolicy(max_attempts=6, base_delay=2.0, max_delay=30.0, max_total=120.0)
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # what may be joined to the workdir and rm -rf'd
DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


@dataclass(frozen=True)
class SSHHostConfig:
    host: str
    port: int = 22
    user: str = "root"
    key_path: Path = Path("~/.ssh/id_ed25519")
    price_per_hour: float = 0.0  # what the machine costs the user, for the estimate

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> SSHHostConfig:
        """From lorarun's config file (`[ssh]` table) or a job's resources: host, port, user, key, price_per_hour."""
        key = raw.get("key") or raw.get("key_path") or raw.get("ssh_key")
        return cls(
            host=str(raw.get("host") or raw.get("ssh_host") or ""),
            port=int(raw.get("port") or raw.get("ssh_port") or 22),
            user=str(raw.get("user") or raw.get("ssh_user") or "root"),
            key_path=Path(key).expanduser() if key else default_key(),
            price_per_hour=float(raw.get("price_per_hour") or 0.0),
        )


def default_key() -> Path:
    """The user's usual key: the first of ~/.ssh/id_ed25519, id_ecdsa, id_rsa that exists."""
    for candidate in DEFAULT_KEYS:
        path = Path(candidate).expanduser()
        if path.exists():
            return path
    return Path(DEFAULT_KEYS[0]).expanduser()


def job_id_of(instance_id: str) -> str:
    job_id = instance_id.removeprefix(LABEL_PREFIX)
    if not _JOB_ID.match(job_id):
        raise ProviderError(f"not a lorarun instance id: {instance_id!r}", provider="ssh")
    return job_id


class SSHProvider:
    name = "ssh"

    def __init__(
        self,
        config: SSHHostConfig,
        *,
        known_hosts: Path,
        sleep: Callable[[float], None] = time.sleep,
        connect_timeout: float = 15.0,
    ):
        if not config.host:
            raise ProviderMisconfigured(
                "provider 'ssh' needs a host: set resources.ssh_host (kohya TOML: [lorarun] ssh_host)",
                provider=self.name,
            )
        self.config = config
        self.known_hosts = Path(known_hosts)
        self._sleep = sleep
        self._connect_timeout = connect_timeout
        self._destroyed: set[str] = set()

    @classmethod
    def from_resources(cls, resources: Any, *, home: Path, **kw: Any) -> SSHProvider:
        """From a job's `Resources` (ssh_host, ssh_port, ssh_user, ssh_key, price_per_hour); pins in lorarun home."""
        config = SSHHostConfig(
            host=resources.ssh_host or "",
            port=int(resources.ssh_port),
            user=resources.ssh_user,
            key_path=Path(resources.ssh_key).expanduser() if resources.ssh_key else default_key(),
            price_per_hour=float(getattr(resources, "price_per_hour", 0.0) or 0.0),
        )
        return cls(config, known_hosts=Path(home) / "ssh_known_hosts", **kw)

    @property
    def key_path(self) -> Path:
        """The key the pipeline must use for this host (the user's own, see the module docstring)."""
        return self.config.key_path

    @property
    def endpoint(self) -> SSHEndpoint:
        return SSHEndpoint(self.config.host, self.config.port, self.config.user)

    def __repr__(self) -> str:
        c = self.config
        return f"SSHProvider({c.user}@{c.host}:{c.port})"

    # --- the Provider protocol ---------------------------------------------------------------------------------
    def offers(self, req: ResourceRequest) -> list[Offer]:
        """The host itself, with what nvidia-smi reports (or CPU_ONLY and 0 GPUs): the only choice there is, so
        it is returned whatever `req` asks; the caller compares gpu_count/vram_gb with the request and says so."""
        out = self._remote(
            "command -v nvidia-smi >/dev/null 2>&1 || exit 0; "
            "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader",
            what="query the GPUs",
        )
        name, count, vram = parse_nvidia_smi(out)
        c = self.config
        return [
            Offer(
                provider=self.name,
                id=f"{c.user}@{c.host}:{c.port}",
                gpu_name=name,
                gpu_count=count,
                vram_gb=vram,
                price_per_hour=c.price_per_hour,
                reliability=1.0,
                location="your machine",
            )
        ]

    def create(self, offer: Offer, spec: InstanceSpec) -> Instance:
        """Nothing to rent: the job's instance is the host, at once. The job folder appears with the upload."""
        job_id_of(spec.label)
        self._destroyed.discard(spec.label)
        return self._instance(spec.label, gpu_name=offer.gpu_name, gpu_count=offer.gpu_count)

    def get(self, instance_id: str) -> Instance | None:
        """RUNNING without probing (the machine is the user's; the SSH session is the real test), None once this
        provider destroyed the job (destroy() only returns when the folder is gone)."""
        if instance_id in self._destroyed:
            return None
        return self._instance(instance_id)

    def destroy(self, instance_id: str) -> None:
        """End the job's process group and remove its folder. A folder that is not there is success."""
        job_id = job_id_of(instance_id)
        self._remote(destroy_script(job_id), what=f"clean up job {job_id}", policy=DESTROY_POLICY, timeout=120)
        self._destroyed.add(instance_id)

    def list_owned(self) -> list[Instance]:
        out = self._remote(
            f'cd {REMOTE_WORKDIR_EXPR} 2>/dev/null || exit 0; for f in *; do if [ -d "$f" ]; then printf "%s\\n" "$f"; fi; done',
            what="list job folders",
        )
        names = [n for n in out.splitlines() if _JOB_ID.match(n)]
        return [self._instance(LABEL_PREFIX + n) for n in sorted(names)]

    def self_destruct(self) -> None:
        return None  # nothing bills and the machine is the user's: the agent just exits after its grace window

    def kill_hint(self, instance_id: str) -> str:
        c = self.config
        return f"ssh -p {c.port} -i {shlex.quote(str(c.key_path))} {c.user}@{c.host} " + shlex.quote(
            destroy_script(job_id_of(instance_id), wait_steps=10)
        )

    # --- internals ---------------------------------------------------------------------------------------------
    def _instance(self, instance_id: str, gpu_name: str = "", gpu_count: int = 0) -> Instance:
        return Instance(
            provider=self.name,
            id=instance_id,
            label=instance_id,
            status=InstanceStatus.RUNNING,
            ssh=self.endpoint,
            price_per_hour=self.config.price_per_hour,
            gpu_name=gpu_name,
            gpu_count=gpu_count,
            extra=(("ssh_key_path", str(self.config.key_path)), ("host", "owned by the user; never destroyed")),
        )

    def _params(self) -> SSHParams:
        c = self.config
        return SSHParams(
            host=c.host,
            port=c.port,
            username=c.user,
            key_path=c.key_path,
            known_hosts=self.known_hosts,
            connect_timeout=self._connect_timeout,
        )

    def _remote(self, command: str, *, what: str, policy: RetryPolicy = DEFAULT_POLICY, timeout: float = 60) -> str:
        """Run one command on the host; SSH failures become typed provider errors, retried per `policy`."""

        def once() -> str:
            # One link try per call: the retry (and its sleeping) lives in retry.call, like every adapter's.
            transport = SSHTransport(self._params(), retry=LinkRetry(attempts=1), sleep=self._sleep)
            try:
                return transport.run(command, timeout=timeout).stdout
            except (ConnectionLost, RemoteTimeout) as e:
                raise TransientError(f"{what} on {self.config.host}: {e}", provider=self.name) from e
            except AuthenticationFailed as e:
                raise AuthError(f"{what} on {self.config.host}: {e}", provider=self.name) from e
            except (HostKeyChanged, RemoteCommandError, RemoteError) as e:
                raise ProviderError(f"{what} on {self.config.host}: {e}", provider=self.name) from e
            finally:
                transport.close()

        return call(policy, once, sleep=self._sleep, what=f"ssh {what}")


def parse_nvidia_smi(out: str) -> tuple[str, int, float]:
    """(GPU name, count, VRAM GB per GPU) from `--query-gpu=name,memory.total --format=csv,noheader` lines
    such as `NVIDIA GeForce RTX 4090, 24564 MiB`; (CPU_ONLY, 0, 0.0) when there are none."""
    rows = []
    for line in out.splitlines():
        if "," not in line:
            continue
        name, mem = (part.strip() for part in line.rsplit(",", 1))
        match = re.match(r"([\d.]+)\s*(MiB|GiB|MB|GB)?", mem)
        if not name or not match:
            continue
        value = float(match.group(1))
        rows.append((name, value if (match.group(2) or "MiB").startswith("G") else value / 1024))
    if not rows:
        return CPU_ONLY, 0, 0.0
    names = sorted({n for n, _ in rows})
    return " + ".join(names), len(rows), round(min(v for _, v in rows), 1)


def destroy_script(job_id: str, wait_steps: int = 50) -> str:
    """Shell that ends the job's process group and removes its folder, touching nothing else.

    The pid in agent.pid may be stale and since reused by someone else's process: the group is only signalled
    when one of its members runs inside the job folder or names it on its command line (the agent is started
    there, with `--job-dir <folder>`). Exits non-zero if the folder is still there afterwards.
    """
    return f"""
d={REMOTE_WORKDIR_EXPR}/{shlex.quote(job_id)}
[ -d "$d" ] || exit 0
d=$(cd "$d" && pwd -P)
members() {{  # live (non-zombie) processes of group $pg, from /proc in one pass
  cat /proc/[0-9]*/stat 2>/dev/null |
    awk -v pg="$pg" '{{ pid = $1; sub(/.*\\) /, ""); split($0, f, " "); if (f[3] == pg && f[1] != "Z") print pid }}'
}}
pg=$(tr -dc 0-9 < "$d/agent.pid" 2>/dev/null)
if [ -n "$pg" ]; then
  ours=0
  for p in $(members); do
    case "$(readlink /proc/$p/cwd 2>/dev/null)" in "$d"|"$d"/*) ours=1 ;; esac
    c=" $(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null) "
    case "$c" in *" $d "*|*" $d/"*|*"=$d "*|*"=$d/"*) ours=1 ;; esac
  done
  if [ "$ours" = 1 ]; then
    kill -TERM -- "-$pg" 2>/dev/null
    i=0
    while [ -n "$(members)" ] && [ $i -lt {wait_steps} ]; do sleep 0.2; i=$((i+1)); done
    kill -KILL -- "-$pg" 2>/dev/null
  fi
fi
rm -rf -- "$d"
[ ! -e "$d" ]
""".strip()
