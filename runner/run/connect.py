"""Turn a job's resources into a provider adapter, and a rented instance into a `Transport`."""

from __future__ import annotations

from pathlib import Path

from lorarun.provider_adapters.base import Instance, Provider
from lorarun.provider_adapters.user_files import lorarun_home
from lorarun.runner.errors import PipelineError
from lorarun.runner.job.spec import Resources
from lorarun.runner.state import JobState
from lorarun.sshlink.transport import Transport

# Injection points for tests (and nothing else): options for cloud adapters (e.g. a faster retry policy) and the
# SSH reconnect policy. Production uses the adapters' and the session's own defaults.
PROVIDER_OPTIONS: dict = {}
SSH_RETRY = None


def make_provider(resources: Resources, home: Path | None = None) -> Provider:
    home = home or lorarun_home()
    name = resources.provider
    if name == "local":
        from lorarun.provider_adapters.local import LocalProvider

        return LocalProvider(home / "local")
    if name == "ssh":
        from lorarun.provider_adapters.ssh import SSHProvider

        return SSHProvider.from_resources(resources, home=home)
    from lorarun.provider_adapters.registry import make_provider as make_cloud_provider

    return make_cloud_provider(name, **PROVIDER_OPTIONS)


def provider_for_state(state: JobState) -> Provider:
    """The adapter for a job recorded on disk (`logs -f`): the job file supplies the ssh host details."""
    from lorarun.runner.job.load import load_job

    try:
        resources = load_job(Path(state.job_file)).resources
    except Exception:
        resources = Resources(provider=state.provider)
    if resources.provider != state.provider:
        resources = Resources(provider=state.provider)
    return make_provider(resources)


def connect_transport(rental, state: JobState, job_dir: Path, *, once: bool = False) -> Transport:
    """The pipeline's `ConnectFn`: a link to the rental's instance (`transport_to`)."""
    return transport_to(rental.instance, state, job_dir, rental.provider, once=once)


def transport_to(
    instance: Instance, state: JobState, job_dir: Path, provider: Provider | None = None, *, once: bool = False
) -> Transport:
    """Local instances get a LocalTransport on their staging folder; everything else SSH with the job's key.
    `once`: one connection attempt, no backoff (the caller polls and may switch endpoints between tries)."""
    if instance.provider == "local":
        from lorarun.runner.remote.local import LocalTransport

        workdir = dict(instance.extra).get("workdir")
        if workdir is None:
            raise PipelineError(f"local instance {instance.id} names no staging folder")
        return LocalTransport(Path(workdir))
    if instance.ssh is None:
        raise PipelineError(f"instance {instance.id} reports no SSH endpoint yet")
    return ssh_transport(
        state,
        job_dir,
        host=instance.ssh.host,
        port=instance.ssh.port,
        username=instance.ssh.username,
        provider=provider,
        once=once,
    )


def ssh_transport(
    state: JobState,
    job_dir: Path,
    *,
    host: str,
    port: int,
    username: str,
    provider: Provider | None = None,
    once: bool = False,
) -> Transport:
    from lorarun.runner.remote.keys import private_key_path
    from lorarun.sshlink.session import SSHParams, SSHTransport

    key = private_key_path(job_dir / "ssh")
    user_key = getattr(provider, "key_path", None)
    if state.provider == "ssh" and user_key:
        key = Path(user_key)  # a machine the user owns: their own key (no per-job key can be installed there)
    params = SSHParams(
        host=host, port=port, username=username, key_path=key, known_hosts=job_dir / "ssh" / "known_hosts"
    )
    transport = SSHTransport(params, retry=SSH_RETRY) if SSH_RETRY is not None else SSHTransport(params)
    transport.connect(once=once)
    return transport
