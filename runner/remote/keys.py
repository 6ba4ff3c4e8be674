"""The per-job SSH key pair: made for one job, installed on its rented instance, thrown away with it.

A fresh key per job means a leaked key opens at most one short-lived machine, and the user's own keys never leave
the laptop. ed25519 through `cryptography` (already a dependency of paramiko): no `ssh-keygen` needed.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PRIVATE_KEY_NAME = "id_ed25519"
PUBLIC_KEY_NAME = "id_ed25519.pub"


def key_comment(job_id: str) -> str:
    return f"lorarun-{job_id}"


def private_key_path(folder: Path) -> Path:
    return Path(folder) / PRIVATE_KEY_NAME


def public_key_path(folder: Path) -> Path:
    return Path(folder) / PUBLIC_KEY_NAME


def write_job_keypair(folder: Path, job_id: str) -> str:
    """Create `folder/id_ed25519` (0600, OpenSSH format) and `folder/id_ed25519.pub`; return the public key line.

    Idempotent: when the pair already exists (a resumed or re-attached job) it is reused, so the key installed
    on the instance keeps working.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = private_key_path(folder), public_key_path(folder)
    if priv_path.exists() and pub_path.exists():
        return pub_path.read_text().strip()

    key = Ed25519PrivateKey.generate()
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public_line = (
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        + " "
        + key_comment(job_id)
    )
    # Created 0600 from the start (no window in which the key is world-readable), then renamed into place.
    tmp = priv_path.with_name(priv_path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_bytes)
    os.replace(tmp, priv_path)
    pub_path.write_text(public_line + "\n")
    return public_line
