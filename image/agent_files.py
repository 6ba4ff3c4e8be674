"""The agent's files and variables: what the controller and the instance both name, and agent.json's shape.

The controller writes `AgentConfig` as `<job_dir>/agent.json` and reads the agent's `status.json` and the job
folder's marker files by these names; the instance's agent (image/instance/agent.py) and lease watchdog
(image/instance/lease.py) read and write the same. Stdlib only: it runs before (and without) torch, and the laptop
imports it without the instance's runtime.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lorarun.image.destroy_plan import DestroyPlan
from lorarun.image.ranges import LEASE_SECONDS

# Files in the job's remote folder.
CONFIG_FILE = "agent.json"
PID_FILE = "agent.pid"
STATUS_FILE = "status.json"
ENGINE_LOG = "engine.log"
HEARTBEAT_FILE = "heartbeat"  # touched by an attached controller: its mtime extends the grace window
COLLECTED_FILE = "collected"
KEPT_FILE = "kept"  # `--keep`: the user keeps the instance; the agent exits, only the watchdog's hard deadline remains
LEASE_FILE = "lease"  # a renewed working-lease deadline written by the controller
EVENTS_FILE = "events.jsonl"  # in the engine's output folder

# Phases written to status.json. The four outcomes are also what `status["outcome"]` holds once the engine is done.
STARTING, TRAINING, GRACE, SELF_DESTROYING = "starting", "training", "grace", "self_destroying"
FINISHED, FAILED, STOPPED, LEASE_EXPIRED = "finished", "failed", "stopped", "lease_expired"

# The instance's environment, set by the create call (image/instance/lease.py reads it).
JOB_ID_ENV = "LORARUN_JOB_ID"
DEADLINE_ENV = "LORARUN_DEADLINE"  # the hard deadline, unix seconds (integer), set at create time
# JSON of the DestroyPlan (names of variables and URLs, no secret), in numbered pieces: Vast refuses an env entry
# longer than 256 characters (providers.md §1.3 x-input-validation), and RunPod's GraphQL way alone is longer.
SELF_DESTRUCT_ENV = "LORARUN_SELF_DESTRUCT"
ENV_PIECE = 200


def split_env(name: str, value: str, piece: int = ENV_PIECE) -> list[tuple[str, str]]:
    """`value` as `name_0`, `name_1`, … each at most `piece` characters (read back by `joined_env`)."""
    return [(f"{name}_{i}", value[start : start + piece]) for i, start in enumerate(range(0, len(value), piece))]


def joined_env(name: str, lookup: Callable[[str], str | None]) -> str | None:
    pieces: list[str] = []
    while (part := lookup(f"{name}_{len(pieces)}")) is not None:
        pieces.append(part)
    return "".join(pieces) or None


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs, written by the controller as `<job_dir>/agent.json`.

    `lease_deadline` is unix seconds, set from the laptop's clock (NTP keeps the two within seconds of each other);
    past it the engine is stopped whatever happens, heartbeat or not.
    `self_destruct` is how the instance destroys itself (image/instance/self_destroy.py; the controller builds it from the
    provider's `Provider.self_destruct()`); None where the machine cannot (or must not) destroy itself (plain SSH
    host, local), and the agent just exits after the grace window.
    """

    job_id: str
    engine_command: tuple[str, ...]
    output_dir: str  # absolute; the engine's events.jsonl and manifest.json live here
    lease_deadline: float
    grace_seconds: float = 600.0
    self_destruct: DestroyPlan | None = None
    heartbeat_file: str = HEARTBEAT_FILE  # relative to the job folder
    stop_timeout: float = 300.0  # SIGTERM → SIGKILL: saving a large checkpoint on a slow disk takes a while
    # The instance's hard deadline (LORARUN_DEADLINE, from the budget): the working lease, however renewed, never
    # goes past it (image/instance/lease.py). None: taken from the environment, else the working lease alone.
    hard_deadline: float | None = None

    def __post_init__(self) -> None:
        if not self.job_id:
            raise ValueError("agent config: job_id is empty")
        if not self.engine_command:
            raise ValueError("agent config: engine_command is empty")
        if not os.path.isabs(self.output_dir):
            raise ValueError(f"agent config: output_dir must be absolute, got {self.output_dir!r}")
        if self.grace_seconds < 0 or self.stop_timeout < 0:
            raise ValueError("agent config: grace_seconds and stop_timeout must not be negative")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["engine_command"] = list(self.engine_command)
        data["self_destruct"] = self.self_destruct.to_dict() if self.self_destruct is not None else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        missing = {"job_id", "engine_command", "output_dir", "lease_deadline"} - known.keys()
        if missing:
            raise ValueError(f"agent config: missing {', '.join(sorted(missing))}")
        sd = known.get("self_destruct")
        if sd is not None:
            if not isinstance(sd, Mapping):
                raise ValueError("agent config: self_destruct must be an object")
            known["self_destruct"] = DestroyPlan.from_dict(sd).with_commands(
                tuple(str(a) for a in data.get("self_destruct_fallback") or ())
            )  # older agent.json files
        known["engine_command"] = tuple(str(a) for a in known["engine_command"])
        known["lease_deadline"] = _sane_deadline(float(known["lease_deadline"]))
        if known.get("hard_deadline") is not None:
            known["hard_deadline"] = _sane_deadline(float(known["hard_deadline"]))
        return cls(**known)

    @classmethod
    def from_json(cls, text: str) -> AgentConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        return cls.from_json(path.read_text(encoding="utf-8"))


def _sane_deadline(ts: float) -> float:
    """A deadline the agent can compare and print. NaN would never expire and 1e30 overflows `gmtime`: either
    (a runaway estimate, a corrupt file) becomes the longest lease lorarun ever gives, counted from now."""
    ceiling = time.time() + LEASE_SECONDS.high
    return ts if math.isfinite(ts) and ts <= ceiling else ceiling
