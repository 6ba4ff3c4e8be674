"""A Hugging Face hub id as `model.base`, checked before renting: against the hub's file list when the hub answers,
against the local cache when it does not (offline, or `HF_HUB_OFFLINE=1`).

Facts relied on (huggingface_hub, `hf_api.py` `model_info` and `constants.py`):
- `GET {HF_ENDPOINT}/api/models/{repo_id}` returns the repo with `siblings: [{"rfilename": ...}]`; an unknown repo
  answers 401 to an anonymous caller and 404 to a logged-in one (the hub does not say whether a private repo
  exists); a gated repo answers 200 here and refuses the files themselves until its licence is accepted.
- `HF_ENDPOINT` (default https://huggingface.co) moves the hub; `HF_TOKEN` authenticates; `HF_HUB_OFFLINE=1`
  forbids network calls.
- The cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
  `~/.cache/huggingface/hub`; a repo lives in `models--{org}--{name}/snapshots/<revision>/`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class HubCheck:
    ok: bool
    message: str  # the problem (ok False) or a note for the user (ok True, may be empty)


def hub_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "huggingface" / "hub"


def cached_snapshot(repo_id: str, env: Mapping[str, str] | None = None) -> Path | None:
    """A cached snapshot of `repo_id` holding a diffusers `model_index.json`, or None."""
    snapshots = hub_cache_dir(env) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    if not snapshots.is_dir():
        return None
    for snap in sorted(snapshots.iterdir()):
        if (snap / "model_index.json").is_file():
            return snap
    return None


def check_hub_model(repo_id: str, *, needed_here: bool, env: Mapping[str, str] | None = None) -> HubCheck:
    """`needed_here`: the model is loaded on this machine (provider local), so an offline miss is fatal; a rented
    instance downloads the model itself, so there an unreachable hub is only a note."""
    env = os.environ if env is None else env
    offline = env.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    reason = "HF_HUB_OFFLINE is set"
    if not offline:
        answer = _ask_hub(repo_id, env)
        if answer is not None:
            return answer
        reason = f"the hub at {env.get('HF_ENDPOINT') or DEFAULT_ENDPOINT} did not answer"
    if cached_snapshot(repo_id, env) is not None:
        return HubCheck(True, "")
    if needed_here:
        return HubCheck(
            False,
            f"{repo_id} is not in the local Hugging Face cache ({hub_cache_dir(env)}) and "
            f"{reason}; connect to the network once so it can be downloaded, or give a local "
            f"folder or .safetensors file",
        )
    return HubCheck(True, f"could not check {repo_id} on the hub ({reason}); the instance will download it")


def _ask_hub(repo_id: str, env: Mapping[str, str]) -> HubCheck | None:
    """The hub's answer about `repo_id`, or None when the hub cannot be reached."""
    import requests

    endpoint = (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    headers = {"Authorization": f"Bearer {env['HF_TOKEN']}"} if env.get("HF_TOKEN") else {}
    try:
        resp = requests.get(f"{endpoint}/api/models/{repo_id}", headers=headers, timeout=TIMEOUT_S)
    except requests.RequestException:
        return None
    if resp.status_code in (401, 404):
        private = " (or it is private: set HF_TOKEN)" if resp.status_code == 401 and not headers else ""
        return HubCheck(
            False,
            f"{repo_id} does not exist on the Hugging Face hub{private}; check the spelling "
            f"(org/name, as in the model page's address)",
        )
    if resp.status_code >= 500 or resp.status_code == 429:
        return None  # the hub is having trouble: fall back to the cache rather than blame the id
    if resp.status_code != 200:
        return HubCheck(False, f"the Hugging Face hub refused {repo_id} (HTTP {resp.status_code})")
    try:
        files = {s.get("rfilename") for s in resp.json().get("siblings", []) if isinstance(s, dict)}
    except ValueError:
        return None
    if "model_index.json" not in files:
        singles = sorted(f for f in files if f and f.endswith((".safetensors", ".ckpt")) and "/" not in f)
        hint = (
            f"; download a single-file checkpoint such as {singles[0]} and give its path"
            if singles
            else "; give a diffusers model repository"
        )
        return HubCheck(False, f"{repo_id} is on the hub but is not a diffusers model (no model_index.json){hint}")
    return HubCheck(True, "")
