"""Publish a finished LoRA to the Hugging Face Hub from the laptop: `output.hub: user/repo` after a verified job,
or `lorarun publish JOB`. The token (HF_TOKEN, else the user's `hf auth login`) stays on the laptop: nothing here
runs on the instance and nothing writes the token anywhere.

The calls, as huggingface_hub makes them (hf_api.py, _commit_api.py, lfs.py):
- `GET /api/whoami-v2`: the token's owner; 401 for a bad token (checked first, so a wrong token is one clear line);
- `POST /api/repos/create` {name, organization, visibility}: 409 when it exists (exist_ok takes that);
- `POST /api/validate-yaml`: the README's YAML header, before any upload;
- `POST /api/models/{repo}/preupload/main`: which files go as LFS; LFS files through
  `POST /{repo}.git/info/lfs/objects/batch` then a PUT to each `actions.upload.href` (or Xet when `hf_xet` is
  installed and the Hub offers it);
- `POST /api/models/{repo}/commit/main` (NDJSON: a header line, then `file` / `lfsFile` lines): one commit.
`HF_ENDPOINT` moves the Hub (read here at call time, so a test's loopback fake is honoured).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lorarun.runner.errors import PipelineError, UserInputError

DEFAULT_ENDPOINT = "https://huggingface.co"
TOKEN_HELP = "make a write token at https://huggingface.co/settings/tokens and set HF_TOKEN (or run `hf auth login`)"


class HubTokenError(UserInputError):
    """No token, or the Hub refused it: exit 2 with one line, before anything is uploaded (or rented)."""


class PublishFailed(PipelineError):
    pass


@dataclass(frozen=True)
class PublishedFile:
    path_in_repo: str
    local: Path


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    url: str
    commit_url: str
    files: tuple[str, ...]


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_token() -> str:
    """HF_TOKEN, else the token `hf auth login` stored (huggingface_hub.get_token reads both, in that order)."""
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise HubTokenError(f"publishing to the Hugging Face Hub needs a token: {TOKEN_HELP}")
    return token


def _api(token: str):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=token)


def check_token(repo_id: str, token: str | None = None) -> str:
    """The token's user name; one clear line (HubTokenError) when there is no token or the Hub refuses it. A Hub
    that cannot be reached is a PublishFailed (the caller decides whether that may wait)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    token = token or hub_token()
    if constants.HF_HUB_OFFLINE:  # huggingface_hub refuses every request then; say why in our words
        raise PublishFailed("HF_HUB_OFFLINE is set, so the Hugging Face Hub cannot be reached; unset it to publish")
    try:
        who = _api(token).whoami(token=token)
    except (HfHubHTTPError, OSError) as exc:  # connection errors are OSErrors (requests', httpx's)
        status = _http_status(exc)
        if status in (401, 403):
            source = "HF_TOKEN" if os.environ.get("HF_TOKEN") else "the stored Hub login"
            raise HubTokenError(
                f"the Hugging Face Hub refused the token from {source} (HTTP {status}) for {repo_id}; {TOKEN_HELP}"
            ) from None
        if status is None:
            raise PublishFailed(f"could not reach the Hugging Face Hub at {hub_endpoint()}: {_short(exc)}") from None
        raise PublishFailed(f"the Hugging Face Hub answered HTTP {status} to whoami: {_short(exc)}") from None
    return str(who.get("name") or "")


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an error of the client carries, or None (no answer at all). huggingface_hub 2.x raises
    HfHubHTTPError; 0.3x's whoami re-raises a bad token as requests' HTTPError (an OSError), with the response."""
    return getattr(getattr(exc, "response", None), "status_code", None)


def publish(repo_id: str, files: list[PublishedFile], *, private: bool, message: str) -> PublishResult:
    """Create the repo if needed (private unless told) and put every file in one commit."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    token = hub_token()
    check_token(repo_id, token)
    api = _api(token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local)) for f in files]
        commit = api.create_commit(repo_id, operations=operations, commit_message=message, repo_type="model")
    except (HfHubHTTPError, OSError) as exc:
        status = _http_status(exc)
        if status in (401, 403):
            raise HubTokenError(
                f"the Hugging Face Hub refused to write to {repo_id} (HTTP {status}): the token needs write access "
                f"to that namespace; {TOKEN_HELP}"
            ) from None
        if status is None:
            raise PublishFailed(f"could not reach the Hugging Face Hub at {hub_endpoint()}: {_short(exc)}") from None
        raise PublishFailed(f"publishing to {repo_id} failed (HTTP {status}): {_short(exc)}") from None
    except ValueError as exc:
        said = " ".join(str(exc).split())
        if isinstance(exc.__cause__, HfHubHTTPError):  # hf_api._validate_yaml: a 400 to the card's YAML header
            raise PublishFailed(f"the Hub refused the model card: {said}") from None
        raise PublishFailed(f"publishing to {repo_id} failed: {said}") from None  # the client's own checks
    return PublishResult(repo_id, str(repo_url), str(commit.commit_url), tuple(f.path_in_repo for f in files))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
