"""Build, tag, push and look up lorarun's instance image through the Docker SDK for Python (`docker`).

The laptop builds the CUDA image that holds the training engine: the repository's `Dockerfile` (classic builder:
Debian's Docker 20.10 and the SDK use it) on a base given by `--base` (build argument BASE_IMAGE). The tag says
what is inside: `<repository>:<lorarun version>-<content hash>`, the hash over exactly the files Docker sends as
the build context (the Dockerfile, .dockerignore's selection) plus the base, so an unchanged tree maps to the same
tag and a changed one never reuses an old tag. Pushing uses Docker's own credentials (`docker login`,
~/.docker/config.json), which the SDK reads; lorarun stores none.

Every failure a user can fix is one line and exit 2 (`ImageError`): no Docker engine, a failed build step (named),
push denied, nowhere to push.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lorarun.runner.errors import UserInputError

ProgressFn = Callable[[str], None]

LOCAL_REPOSITORY = "lorarun/engine"  # the name of an image built without --tag (not pushable: see `push`)
VERSION_LABEL = "org.lorarun.version"
CONTENT_LABEL = "org.lorarun.content"


class ImageError(UserInputError):
    """`lorarun image` could not do what was asked; the message says what to do."""


class DockerUnavailable(ImageError):
    pass


class BuildFailed(ImageError):
    pass


class PushDenied(ImageError):
    pass


class NoRegistry(ImageError):
    pass


@dataclass(frozen=True)
class BuildResult:
    tag: str
    image_id: str
    size_bytes: int
    seconds: float
    pushed: bool
    base: str


@dataclass(frozen=True)
class ImageStatus:
    name: str
    source: str  # where the name came from: job file, LORARUN_IMAGE, default
    local: bool | None  # None: no Docker engine to ask
    registry: bool | None  # None: could not be determined (reason in `note`)
    note: str = ""


# --- the source tree -------------------------------------------------------------------------------------------
def source_root() -> Path:
    """The folder with lorarun's Dockerfile: the checkout this lorarun runs from."""
    import lorarun

    for candidate in (Path(lorarun.__file__).resolve().parent.parent, Path.cwd()):
        if (candidate / "Dockerfile").is_file() and (candidate / "pyproject.toml").is_file():
            return candidate
    raise ImageError(
        "lorarun image build needs lorarun's source tree (its Dockerfile): run it from a checkout "
        "of lorarun installed with `pip install -e .`"
    )


def context_files(root: Path) -> list[str]:
    """The files Docker sends as the build context, by the same rules (`.dockerignore`) the SDK applies."""
    from docker.utils.build import exclude_paths

    ignore = root / ".dockerignore"
    patterns = (
        [p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")]
        if ignore.is_file()
        else []
    )
    return sorted(p for p in exclude_paths(str(root), patterns, dockerfile="Dockerfile") if (root / p).is_file())


def content_hash(root: Path, base: str | None) -> str:
    digest = hashlib.sha256(f"base={base or ''}\n".encode())
    for rel in context_files(root):
        digest.update(rel.encode() + b"\0")
        digest.update(hashlib.sha256((root / rel).read_bytes()).digest())
    return digest.hexdigest()[:12]


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("lorarun")
    except PackageNotFoundError:
        return "0.0.0"


def split_name(name: str) -> tuple[str, str | None]:
    """`registry/ns/repo:tag` -> (`registry/ns/repo`, `tag`); a registry port's colon is not a tag."""
    if "@" in name:
        return name.split("@", 1)[0], None
    head, _, last = name.rpartition("/")
    if ":" in last:
        repo, tag = last.split(":", 1)
        return (f"{head}/{repo}" if head else repo), tag
    return name, None


def resolve_tag(tag: str | None, configured: str | None, content: str) -> str:
    """`--tag` as given (a tag is added when it names only a repository); else the configured image's repository;
    else the local name. The added tag is `<version>-<content hash>`."""
    auto = f"{version()}-{content}"
    for name in (tag, configured):
        if name:
            repo, given = split_name(name)
            return f"{repo}:{given}" if (given and name == tag) else f"{repo}:{auto}"
    return f"{LOCAL_REPOSITORY}:{auto}"


# --- Docker ----------------------------------------------------------------------------------------------------
def docker_client():
    """A client for the engine DOCKER_HOST (or the default socket) names; one line if none answers."""
    import docker
    from docker.errors import DockerException

    where = os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except DockerException as exc:
        raise DockerUnavailable(
            f"no Docker engine answers at {where}: start Docker (or set DOCKER_HOST) and retry ({_short(exc)})"
        ) from None
    except Exception as exc:  # requests' connection errors surface unwrapped from ping()
        raise DockerUnavailable(
            f"no Docker engine answers at {where}: start Docker (or set DOCKER_HOST) and retry ({_short(exc)})"
        ) from None
    return client


def build(
    *,
    base: str | None = None,
    tag: str | None = None,
    configured: str | None = None,
    push: bool = False,
    progress: ProgressFn = lambda line: None,
    root: Path | None = None,
    network_mode: str | None = None,
) -> BuildResult:
    """Build the Dockerfile (on `base` when given), tag it, and push it when asked."""
    root = root or source_root()
    if push:
        check_pushable(tag or configured)
    client = docker_client()
    content = content_hash(root, base)
    name = resolve_tag(tag, configured, content)
    started = time.monotonic()
    buildargs = {"BASE_IMAGE": base} if base else None
    progress(f"building {name} from {root}" + (f" on {base}" if base else ""))
    try:
        stream = client.api.build(
            path=str(root),
            dockerfile="Dockerfile",
            tag=name,
            buildargs=buildargs,
            rm=True,
            forcerm=True,
            decode=True,
            network_mode=network_mode or os.environ.get("LORARUN_DOCKER_NETWORK") or None,
            labels={VERSION_LABEL: version(), CONTENT_LABEL: content},
        )
        image_id = _follow_build(stream, progress)
    except BuildFailed:
        raise
    except Exception as exc:  # the engine refused the request itself (bad base name, daemon gone mid-build)
        raise BuildFailed(f"docker build failed: {_short(exc)}") from None
    image = client.images.get(name)
    result = BuildResult(
        tag=name,
        image_id=image_id or image.id,
        size_bytes=int(image.attrs.get("Size") or 0),
        seconds=time.monotonic() - started,
        pushed=False,
        base=base or "(Dockerfile default)",
    )
    if push:
        push_image(client, name, progress)
        result = BuildResult(**{**result.__dict__, "pushed": True})
    return result


def _follow_build(stream: Iterable[dict], progress: ProgressFn) -> str:
    """Relay the build's output; on an error, raise with the step that failed (`Step 3/12 : RUN apt-get ...`)."""
    step, image_id = "", ""
    tail: list[str] = []
    for chunk in stream:
        if "stream" in chunk:
            text = str(chunk["stream"])
            for line in text.splitlines():
                if line.startswith("Step "):
                    step = line.strip()
                if line.strip():
                    tail = (tail + [line.rstrip()])[-20:]
                    progress(line.rstrip())
        elif "aux" in chunk and isinstance(chunk["aux"], dict):
            image_id = str(chunk["aux"].get("ID") or image_id)
        elif "error" in chunk or "errorDetail" in chunk:
            message = str(chunk.get("error") or (chunk.get("errorDetail") or {}).get("message") or "").strip()
            # Docker's own line repeats the whole command; the cause is in the step's last output lines.
            cause = _cause(tail)
            said = message.splitlines()[-1] if message else "unknown error"
            if "non-zero code" in said:
                said = "exit code " + said.rsplit(":", 1)[-1].strip()
            raise BuildFailed(
                f"docker build failed at {_clip(step or 'the build', 90)}: {_clip(said, 120)}"
                + (f" ({_clip(cause, 200)})" if cause else "")
            )
        elif "status" in chunk:  # pulling the base
            progress(f"{chunk.get('status')} {chunk.get('id', '')}".rstrip())
    return image_id


def _cause(lines: list[str]) -> str:
    """The line of a failed step's output that says why: a Python exception or apt's `E:` first, else the last
    line mentioning an error (pip's `note:` lines and Docker's own summary are no cause)."""
    for pattern in (r"^\s*(\w+(Error|Exception)|E):", r"(?i)error"):
        for line in reversed(lines):
            if re.search(pattern, line) and not line.strip().startswith("note:") and "non-zero code" not in line:
                return line.strip()
    return ""


def check_pushable(name: str | None) -> None:
    if not name:
        raise NoRegistry(
            "nowhere to push: pass --tag REGISTRY/NAME[:TAG] (e.g. ghcr.io/you/lorarun-engine) or set "
            "LORARUN_IMAGE to your image's name"
        )
    repo, _ = split_name(name)
    if "/" not in repo:
        raise NoRegistry(
            f"--tag {name}: name a registry or account to push to, e.g. ghcr.io/you/{repo} or docker.io/you/{repo}"
        )


def push_image(client, name: str, progress: ProgressFn) -> None:
    repo, tag = split_name(name)
    progress(f"pushing {name}")
    try:
        for chunk in client.api.push(repo, tag=tag, stream=True, decode=True):
            if "error" in chunk or "errorDetail" in chunk:
                message = str(chunk.get("error") or (chunk.get("errorDetail") or {}).get("message") or "")
                raise _push_error(name, message)
            if chunk.get("status") and not chunk.get("progressDetail"):
                progress(f"{chunk['status']} {chunk.get('id', '')}".rstrip())
    except ImageError:
        raise
    except Exception as exc:
        raise _push_error(name, _short(exc)) from None


def _push_error(name: str, message: str) -> ImageError:
    registry = split_name(name)[0].split("/", 1)[0]
    lowered = message.lower()
    if any(
        word in lowered
        for word in ("denied", "unauthorized", "authentication required", "no basic auth", "forbidden", "401", "403")
    ):
        return PushDenied(
            f"push of {name} denied by {registry}: run `docker login {registry}` with an account that "
            f"may write there ({_clip(message)})"
        )
    return ImageError(f"push of {name} failed: {_clip(message)}")


# --- which image a job uses -------------------------------------------------------------------------------------
def configured_image() -> tuple[str | None, str]:
    """The user's configured image and where it was found: `LORARUN_IMAGE`, else `image` in the user config
    (`lorarun config set image …`). A job's `resources.image` always wins over both. An unreadable config is the
    user's to fix, so its one-line error is not swallowed here."""
    value = os.environ.get("LORARUN_IMAGE", "").strip()
    if value:
        return value, "LORARUN_IMAGE"
    from lorarun.runner.job import user_config

    value = str(user_config.load().get("image") or "").strip()
    if value:
        return value, f"user config ({user_config.config_path()})"
    return None, ""


def image_for_job(job_image: str | None) -> tuple[str, str]:
    """The image a job runs on: its own `resources.image` if set away from the default, else the configured
    image, else the built-in default."""
    from lorarun.runner.job.spec import DEFAULT_IMAGE

    if job_image and job_image != DEFAULT_IMAGE:
        return job_image, "job file"
    configured, where = configured_image()
    if configured:
        return configured, where
    return DEFAULT_IMAGE, "default"


def registry_login(image: str):
    """Docker's own credentials (`docker login`, ~/.docker/config.json and its credential helpers) for the registry
    of `image`, as the provider needs them to pull a private image; None when there are none."""
    try:
        from docker import auth
    except ImportError:
        return None
    from lorarun.provider_adapters.base import RegistryLogin

    try:
        registry, _ = auth.resolve_repository_name(split_name(image)[0])
        creds = auth.load_config().resolve_authconfig(registry) or {}
    except Exception:
        return None
    user, password = creds.get("username") or creds.get("Username"), creds.get("password") or creds.get("Password")
    if not user or not password:
        return None
    return RegistryLogin(registry=registry, username=str(user), password=str(password))


def show(name: str, source: str) -> ImageStatus:
    """Whether `name` is in the local engine and in its registry (asked through the engine, with Docker's own
    credentials). Never raises for an absent engine or registry: the answer says what could not be checked."""
    try:
        client = docker_client()
    except DockerUnavailable as exc:
        return ImageStatus(name, source, None, None, str(exc))
    from docker.errors import APIError, ImageNotFound

    try:
        client.images.get(name)
        local = True
    except ImageNotFound:
        local = False
    try:
        client.api.inspect_distribution(name)
        return ImageStatus(name, source, local, True)
    except APIError as exc:
        text = _short(exc)
        if any(w in text.lower() for w in ("not found", "manifest unknown", "does not exist")):
            return ImageStatus(name, source, local, False, text)
        return ImageStatus(name, source, local, None, text)
    except Exception as exc:
        return ImageStatus(name, source, local, None, _short(exc))


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return _clip(text.splitlines()[0])


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
