"""The one self-destroy plan: how an instance destroys itself with its own instance-scoped key (never the user's).

Both sides read this module and nothing else about it: the adapters build a `DestroyPlan`
(`Provider.self_destruct()`), the controller hands it to the instance as JSON (agent.json's `self_destruct`, and
the create call's env, image/agent_files.py `SELF_DESTRUCT_ENV`), and the instance's self-destroyer
(image/instance/self_destroy.py) reads it back with `DestroyPlan.from_dict`. Names of variables and URLs only: no
secret ever travels in a plan.

The instance tries `ways` in order and counts one only once a `checks` entry shows the instance gone. The id and
key are read from `$<id_env>` / `$<key_env>` (environment or `/proc/1/environ`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Way kinds.
HTTP, GRAPHQL, COMMAND = "http", "graphql", "command"
# Check styles: how a provider says "this instance no longer exists".
VAST_SHOW = "vast_show"  # GET /api/v0/instances/{id}/ → 200 {"instances": null} (providers.md §1.4; VCLI tests)
RUNPOD_REST = "runpod_rest"  # GET /v2/pods/{id} → 404 problem+json (RPDOCS v2 getPod), on a route that showed it
RUNPOD_GRAPHQL = "runpod_graphql"  # query pod(input:{podId}) → data.pod null (DSTACK guards for it) or TERMINATED


@dataclass(frozen=True)
class DestroyWay:
    """One way to ask the provider to destroy this instance. `{instance_id}` is filled in on the instance."""

    kind: str  # http (method + url) | graphql (url + query) | command (argv, with the id and key in its env)
    method: str = ""
    url: str = ""
    query: str = ""
    argv: tuple[str, ...] = ()

    def label(self) -> str:
        if self.kind == COMMAND:
            return " ".join(self.argv[:4])
        return f"{self.kind} {self.method} {self.url}".replace("  ", " ").strip()


@dataclass(frozen=True)
class DestroyCheck:
    """One way to look, with the instance key, whether the instance still exists."""

    style: str  # vast_show | runpod_rest | runpod_graphql
    url: str


@dataclass(frozen=True)
class DestroyPlan:
    id_env: str  # the variable holding this instance's id (CONTAINER_ID, RUNPOD_POD_ID)
    key_env: str  # the variable holding the instance-scoped key (CONTAINER_API_KEY, RUNPOD_API_KEY)
    ways: tuple[DestroyWay, ...]
    checks: tuple[DestroyCheck, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape that crosses to the instance (empty fields left out: the env has little room)."""
        return {
            "id_env": self.id_env,
            "key_env": self.key_env,
            "ways": [{k: list(v) if isinstance(v, tuple) else v for k, v in vars(w).items() if v} for w in self.ways],
            "checks": [{"style": c.style, "url": c.url} for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DestroyPlan:
        """Read the JSON shape; also the older one-request shape ({method, url, id_env, key_env,
        fallback_command}) that agent.json files written before the plan had ways still carry."""
        try:
            if "ways" not in data:
                ways = [DestroyWay(HTTP, method=str(data["method"]).upper(), url=str(data["url"]))]
                if data.get("fallback_command"):
                    ways.append(DestroyWay(COMMAND, argv=tuple(str(a) for a in data["fallback_command"])))
                return cls(str(data["id_env"]), str(data["key_env"]), tuple(ways))
            parsed = tuple(
                DestroyWay(
                    kind=str(w["kind"]),
                    method=str(w.get("method", "")).upper(),
                    url=str(w.get("url", "")),
                    query=str(w.get("query", "")),
                    argv=tuple(str(a) for a in w.get("argv") or ()),
                )
                for w in data["ways"]
            )
            checks = tuple(DestroyCheck(str(c["style"]), str(c["url"])) for c in data.get("checks") or ())
            plan = cls(str(data["id_env"]), str(data["key_env"]), parsed, checks)
        except (KeyError, TypeError, AttributeError):
            raise ValueError(
                "agent config: self_destruct needs id_env, key_env and ways (or method, url, id_env and key_env)"
            ) from None
        bad = [w.kind for w in plan.ways if w.kind not in (HTTP, GRAPHQL, COMMAND)]
        bad += [c.style for c in plan.checks if c.style not in (VAST_SHOW, RUNPOD_REST, RUNPOD_GRAPHQL)]
        if bad:
            raise ValueError(f"agent config: self_destruct: unknown kind {bad[0]!r}")
        return plan

    def with_commands(self, *argvs: tuple[str, ...]) -> DestroyPlan:
        extra = tuple(DestroyWay(COMMAND, argv=tuple(a)) for a in argvs if a)
        return DestroyPlan(self.id_env, self.key_env, self.ways + extra, self.checks)
