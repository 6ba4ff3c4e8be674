"""Host keys: trust on first use, then pinned in the job's own known_hosts file.

A rented instance is new to us, so its first key cannot be checked against anything; what matters is that the
machine we uploaded the dataset to is the one we later pull the LoRA from and stop. The first key seen for
`host:port` is appended to the job's file; any other key later raises `HostKeyChanged`. There is no
accept-anything policy: tests pin too.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import paramiko

from lorarun.sshlink.errors import HostKeyChanged

log = logging.getLogger(__name__)

# Which host key algorithms show a pinned key of a given type again (RSA keys sign with SHA-2 nowadays).
KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
}

_pin_lock = threading.Lock()  # two connections of one process must not both pin


def host_entry(host: str, port: int) -> str:
    """The host field OpenSSH writes in known_hosts."""
    return host if port == 22 else f"[{host}]:{port}"


def pinned_keys(known_hosts: Path, host: str, port: int) -> list[paramiko.PKey]:
    if not Path(known_hosts).exists():
        return []
    keys = paramiko.HostKeys(str(known_hosts)).lookup(host_entry(host, port))
    return list(keys.values()) if keys else []


def algorithms_for(pins: list[paramiko.PKey], offered: Sequence[str]) -> tuple[str, ...]:
    """The host key algorithms to ask for so that a server with several keys shows the pinned one."""
    wanted = [a for k in pins for a in KEY_ALGORITHMS.get(k.get_name(), (k.get_name(),))]
    return tuple(a for a in wanted if a in offered)


def check_or_pin(known_hosts: Path, host: str, port: int, key: paramiko.PKey) -> None:
    """Accept `key` if it is the pinned one, pin it if nothing is pinned yet, raise `HostKeyChanged` otherwise."""
    known_hosts = Path(known_hosts)
    with _pin_lock:
        pins = pinned_keys(known_hosts, host, port)
        if pins:
            if any(p.get_name() == key.get_name() and p.asbytes() == key.asbytes() for p in pins):
                return
            raise HostKeyChanged(host, port, ", ".join(p.fingerprint for p in pins), key.fingerprint, str(known_hosts))
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        line = f"{host_entry(host, port)} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line)
        log.info("pinned host key %s for %s:%d in %s", key.fingerprint, host, port, known_hosts)
