"""Flags that `submit` and `sweep` share, checked before anything is estimated or rented (exit 2 naming the flag)."""

from __future__ import annotations

import math

from lorarun.image.ranges import GRACE_SECONDS, LEASE_SECONDS, out_of_range
from lorarun.runner.errors import InvalidJob, UserInputError


def check_flags(*, lease_seconds: float | None, grace_seconds: float) -> None:
    """The hidden timing flags go into the agent's clock: finite and bounded, or exit 2 naming the flag."""
    problems = [
        p
        for p in (
            out_of_range("--lease-seconds", lease_seconds, LEASE_SECONDS),
            out_of_range("--grace-seconds", grace_seconds, GRACE_SECONDS),
        )
        if p
    ]
    if problems:
        raise InvalidJob(problems)


def hard_lease_seconds(minutes: float | None) -> float | None:
    """`--hard-lease-minutes` in seconds, or None when not given; out of range: exit 2 naming the flag."""
    if minutes is None:
        return None
    if not math.isfinite(minutes) or minutes <= 0 or minutes > 7 * 24 * 60:
        raise UserInputError(f"--hard-lease-minutes: {minutes} is outside 0 < minutes ≤ 10080 (7 days)")
    return minutes * 60.0
