"""#15.1: with `epochs: 1e30` the lease deadline overflowed and the agent died formatting it, leaving the instance
unguarded. Whatever deadline reaches the agent, it is a finite time it can compare and print."""

from __future__ import annotations

import math
import time

import pytest

from lorarun.image.agent_files import AgentConfig
from lorarun.image.instance.agent import _fmt_ts
from lorarun.image.instance.lease import _fmt
from lorarun.image.ranges import LEASE_SECONDS


@pytest.mark.parametrize("deadline", [1e30, math.inf, math.nan, 1e300])
def test_an_absurd_deadline_becomes_the_longest_lease(deadline):
    before = time.time()
    cfg = AgentConfig.from_dict(
        {
            "job_id": "j",
            "engine_command": ["true"],
            "output_dir": "/o",
            "lease_deadline": deadline,
            "hard_deadline": deadline,
        }
    )
    for value in (cfg.lease_deadline, cfg.hard_deadline):
        assert math.isfinite(value) and before < value <= time.time() + LEASE_SECONDS.high
        assert _fmt_ts(value).endswith("UTC")


def test_a_sane_deadline_is_kept_and_formatting_never_raises():
    soon = time.time() + 3600
    cfg = AgentConfig.from_dict({"job_id": "j", "engine_command": ["true"], "output_dir": "/o", "lease_deadline": soon})
    assert cfg.lease_deadline == soon
    for ts in (1e30, math.nan, -1e30):
        assert "unix seconds" in _fmt_ts(ts) and "unix seconds" in _fmt(ts)
