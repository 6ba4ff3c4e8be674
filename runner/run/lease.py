"""The controller's side of the instance's lease (the instance's side, and what the two deadlines mean, is in
image/instance/lease.py).

- `hard_lease_seconds`: how long the instance may live at most, fixed at create time (`LORARUN_DEADLINE`). The
  user's budget is the promise: `max_cost ÷ price`. Without a budget, a generous multiple of the estimate (the
  estimate can be several times off; this is a cap on spend when nobody is watching, not a prediction).
  `--hard-lease-minutes` overrides it.
- `LeaseRenewer`: while a controller is attached and the job makes progress (new engine events), it pushes the
  agent's working lease forward, one `lease` file write at a time; the agent caps it at the hard deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

NO_BUDGET_FACTOR = 4.0  # no max_cost: 4× the estimate …
NO_BUDGET_MARGIN_S = 2 * 3600.0  # … and at least two hours more than it
MAX_HARD_LEASE_S = 7 * 24 * 3600.0  # finite and bounded whatever the inputs (a $1e6 budget on a free machine)
MIN_HARD_LEASE_S = 30 * 60.0  # a budget for a few minutes still leaves time to boot, upload and pull
RENEW_EVERY_S = 60.0


def hard_lease_seconds(
    estimate_seconds: float, price_per_hour: float, max_cost: float | None, override: float | None = None
) -> float:
    """Seconds from create to the instance's hard deadline."""
    if override is not None:
        return min(override, MAX_HARD_LEASE_S)
    if max_cost is not None and price_per_hour > 0:
        seconds = max(max_cost / price_per_hour * 3600.0, MIN_HARD_LEASE_S)
    else:
        seconds = max(estimate_seconds * NO_BUDGET_FACTOR, estimate_seconds + NO_BUDGET_MARGIN_S)
    return min(seconds, MAX_HARD_LEASE_S) if math.isfinite(seconds) else MAX_HARD_LEASE_S


@dataclass
class LeaseRenewer:
    """Decides when the attached controller renews the working lease, and to what."""

    window: float  # the working lease's length: each renewal sets it to now + window
    hard_deadline: float | None
    wall: Callable[[], float]
    last_progress: int = -1
    last_renewal: float = -math.inf

    def due(self, progress: int) -> float | None:
        """The new deadline when a renewal is due (`progress`: engine events seen so far), else None."""
        now = self.wall()
        if progress <= self.last_progress or now - self.last_renewal < min(RENEW_EVERY_S, self.window / 4):
            return None
        self.last_progress, self.last_renewal = progress, now
        deadline = now + self.window
        return min(deadline, self.hard_deadline) if self.hard_deadline is not None else deadline
