"""The controller's side of the lease: the hard limit from the budget, and when an attached controller renews."""

from __future__ import annotations

import math

from lorarun.runner.run.lease import MAX_HARD_LEASE_S, MIN_HARD_LEASE_S, LeaseRenewer, hard_lease_seconds


def test_hard_limit_is_the_budget_divided_by_the_price():
    assert hard_lease_seconds(600, price_per_hour=0.5, max_cost=2.0) == 4 * 3600  # $2 at $0.50/h: 4 hours


def test_hard_limit_without_a_budget_is_a_generous_multiple_of_the_estimate():
    assert hard_lease_seconds(600, 0.5, None) == 600 + 2 * 3600
    assert hard_lease_seconds(5 * 3600, 0.5, None) == 20 * 3600


def test_hard_limit_is_finite_and_bounded():
    assert hard_lease_seconds(600, 0.0, 5.0) == 600 + 2 * 3600  # a free machine: the budget says nothing
    assert hard_lease_seconds(600, 1e-9, 1e6) == MAX_HARD_LEASE_S
    assert hard_lease_seconds(math.inf, 1.0, None) == MAX_HARD_LEASE_S
    assert hard_lease_seconds(600, 100.0, 0.01) == MIN_HARD_LEASE_S
    assert hard_lease_seconds(600, 1.0, 5.0, override=90.0) == 90.0


def test_renewal_only_on_progress_and_never_past_hard():
    now = {"t": 1000.0}
    renewer = LeaseRenewer(window=400.0, hard_deadline=1900.0, wall=lambda: now["t"])
    assert renewer.due(1) == 1400.0
    now["t"] = 1050.0
    assert renewer.due(2) is None  # too soon after the last renewal (window / 4 = 100 s)
    now["t"] = 1200.0
    assert renewer.due(2) == 1600.0
    now["t"] = 1400.0
    assert renewer.due(2) is None  # no progress since: the lease runs on towards its end
    now["t"] = 1700.0
    assert renewer.due(3) == 1900.0  # capped by the hard deadline
