"""How fast the controller may ask a provider about an instance, and what a refusal to answer means while it boots.

Vast.ai documents a minimum interval per endpoint rather than a quota: show instance (`GET /instances/{id}/`)
carries `x-rate-limit` 2.0 — one call per 2 s per identity (vast-ai/docs `api-reference/openapi/yaml/
show_instance.yaml`; providers.md §1.4, §1.9) — and its guide polls every 10 s (vast-ai/docs `hello-world.mdx`).
A 429 or a 5xx while an instance boots says nothing about the instance: it is "not yet", never a failed job (the
client's own retries have already backed off; the boot poll simply asks again later).
"""

from __future__ import annotations

from lorarun.provider_adapters.base import Instance, Provider
from lorarun.provider_adapters.errors import RateLimitError, TransientError

# Seconds between two looks at one instance, at least. RunPod states a per-minute quota (60/min, providers.md
# §2.9), which one poll per second stays under.
MIN_POLL_S = {"vastai": 2.0}


class NotYet:
    """The provider did not answer this time: ask again on the next round (a type, so callers narrow on it)."""


NOT_YET = NotYet()


def boot_poll_interval(provider_name: str, wanted: float = 1.0) -> float:
    return max(wanted, MIN_POLL_S.get(provider_name, 0.0))


def look(provider: Provider, instance_id: str) -> Instance | None | NotYet:
    """`provider.get()`, or NOT_YET when it was rate-limited or answered a transient error."""
    try:
        return provider.get(instance_id)
    except (RateLimitError, TransientError):
        return NOT_YET
