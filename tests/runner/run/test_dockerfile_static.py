"""The Dockerfile and the image's start-up, read without Docker (the fast suite; the container tests build them).

Holds where Docker cannot start: the base is a pinned build argument, nothing secret is baked in, sshd lets root
in with a key only, and the file builds with the classic builder (no heredoc, no RUN --mount, no syntax line)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from support.paths import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
STARTUP = REPO / "image" / "instance" / "startup" / "lorarun-startup.sh"
SSHD_CONF = (REPO / "image" / "instance" / "startup" / "sshd_lorarun.conf").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " " if raw.rstrip().endswith("\\") else raw.strip()
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


def test_classic_builder_only():
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE, re.M | re.I), "a syntax line pulls a frontend image"
    for word, args in instructions():
        assert "--mount" not in args, f"{word} --mount needs BuildKit"
        assert "<<" not in args, f"heredoc in {word}: the classic builder has none"


def test_base_is_a_pinned_build_argument():
    ins = instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a in ins if w == "ARG" and "=" in a}
    assert "BASE_IMAGE" in args
    base = args["BASE_IMAGE"]
    assert ":" in base and not base.endswith(":latest"), f"base not pinned: {base}"
    assert re.search(r"cuda12\.\d+", base) and "cudnn" in base and "runtime" in base, base
    froms = [a for w, a in ins if w == "FROM"]
    assert froms == ["${BASE_IMAGE}"]


def test_no_secrets_baked_in():
    for word, args in instructions():
        if word in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD)\w*\s*=", args, re.I), args
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.ssh|\.docker|\.netrc|credentials|id_(rsa|ed25519)", args), args
    assert "chpasswd" not in DOCKERFILE and not re.search(r"\bpasswd\b", DOCKERFILE)
    assert "ssh_host_" in DOCKERFILE, "host keys must be removed from the image (made at start-up)"


def test_sshd_key_only_for_root():
    settings = {}
    for line in SSHD_CONF.splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split(None, 1)
            settings.setdefault(key.lower(), value.strip())  # sshd: the first value wins
    assert settings["permitrootlogin"] == "prohibit-password"
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    assert settings["permitemptypasswords"] == "no"
    assert "image/instance/startup/sshd_lorarun.conf /etc/ssh/sshd_config.d/lorarun.conf" in DOCKERFILE
    assert ("EXPOSE", "22") in instructions()


def test_entrypoint_is_the_startup_file_in_the_repo():
    ins = instructions()
    assert [a for w, a in ins if w == "ENTRYPOINT"] == ['["/usr/local/bin/lorarun-startup"]']
    assert "image/instance/startup/lorarun-startup.sh /usr/local/bin/lorarun-startup" in DOCKERFILE
    assert "/usr/local/bin/lorarun-python" in DOCKERFILE


def test_code_is_the_last_layer():
    """A code change must not reinstall the dependencies: the source COPYs come after the pip layer."""
    ins = instructions()
    deps = max(i for i, (w, a) in enumerate(ins) if w == "RUN" and "requirements.txt" in a)
    source = [i for i, (w, a) in enumerate(ins) if w == "COPY" and a.startswith(". ")]
    assert source and min(source) > deps and len(ins) - min(source) == 2  # COPY . and one RUN, nothing after


def test_build_context_is_small():
    """.dockerignore keeps the virtualenv, git and the tests out of the context the SDK uploads."""
    pytest.importorskip("docker")
    from lorarun.runner.run.image_build import context_files

    files = context_files(REPO)
    assert "Dockerfile" in files and "pyproject.toml" in files and "image/instance/startup/lorarun-startup.sh" in files
    assert not [f for f in files if f.startswith((".venv", ".git/", "tests/", "bench/", "jobs/"))]


def test_startup_script_is_posix_sh_and_keeps_path_out_of_etc_environment():
    sh = shutil.which("dash") or shutil.which("sh")
    assert subprocess.run([sh, "-n", str(STARTUP)]).returncode == 0
    text = STARTUP.read_text()
    assert text.startswith("#!/bin/sh")
    # Provider variables for sessions, never PATH: the engine's Python is found through the fixed path instead.
    pattern = re.search(r"grep -E '\^\(([^)]*)\)='", text).group(1).split("|")
    assert "PATH" not in pattern and {"CONTAINER_API_KEY", "RUNPOD_API_KEY", "LORARUN_DEADLINE"} <= set(pattern)
    assert "lorarun-agent" in text and "watchdog" in text and '[ -x "$agent" ]' in text
    assert "exec /usr/sbin/sshd -D" in text
