"""`make_provider(name, **options)`: the one place that turns a provider name into an adapter.

Factories are imported lazily (`"module:Class"` strings), so a provider whose module is missing or broken
only fails when someone asks for it. To add a provider, add one line to `_FACTORIES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lorarun.provider_adapters.base import Provider
from lorarun.provider_adapters.credentials import ENV_VARS, find_api_key

_FACTORIES: dict[str, str] = {
    "vastai": "lorarun.provider_adapters.vastai.adapter:VastProvider",
    "runpod": "lorarun.provider_adapters.runpod.adapter:RunPodProvider",
    "ssh": "lorarun.provider_adapters.ssh:SSHProvider",
    "local": "lorarun.provider_adapters.local:LocalProvider",
}
# Providers that rent through an account and need an API key; `make_provider` finds it unless one is given.
_NEEDS_KEY = frozenset(ENV_VARS)


def available() -> list[str]:
    return sorted(_FACTORIES)


def _resolve(name: str) -> Callable[..., Provider]:
    try:
        target = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(available())}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_provider(
    name: str, *, env: Mapping[str, str] | None = None, home: Path | None = None, **options: Any
) -> Provider:
    """Build the adapter for `name`. For vastai/runpod without `api_key=`, the key is looked up with
    `credentials.find_api_key` (raising CredentialsMissing). Other options go to the adapter's constructor."""
    factory = _resolve(name)
    if name in _NEEDS_KEY and options.get("api_key") is None:
        options["api_key"] = find_api_key(name, env=env, home=home).key
    return factory(**options)
