"""Packing a batch onto rentals: longest first onto the least-loaded rental (runner/batch/packing.py)."""

from __future__ import annotations

import itertools

import pytest

from lorarun.runner.batch.packing import Share, least_loaded, pack, wall_seconds


def test_longest_first_onto_the_least_loaded():
    shares = pack([10, 60, 30, 20, 50, 40], 3)
    # 60, 50, 40 open the three rentals; 30 joins the 40, 20 the 50, 10 the 60: all end at 70.
    assert shares == (Share(jobs=(1, 0), seconds=70), Share(jobs=(4, 3), seconds=70), Share(jobs=(5, 2), seconds=70))


def test_one_long_job_gets_a_rental_to_itself_and_the_wall_is_that_job():
    seconds = [600] + [100] * 7
    shares = pack(seconds, 3)
    assert shares[0].jobs == (0,)
    assert wall_seconds(shares) == 600  # ≤ 1.3 × the longest job


def test_eight_jobs_over_three_rentals_stay_near_the_optimum():
    # LPT's makespan is within 4/3 of the best possible; check against brute force on a small batch.
    seconds = [70, 65, 40, 38, 33, 20, 12, 9]
    best = min(
        max(sum(s for s, r in zip(seconds, assign) if r == k) for k in range(3))
        for assign in itertools.product(range(3), repeat=len(seconds))
    )
    assert wall_seconds(pack(seconds, 3)) <= best * 4 / 3


def test_startup_counts_once_per_rental():
    # Two short jobs: on one rental 2×10 + 100 start-up; on two rentals 110 each: the wall is shorter spread out.
    shares = pack([10, 10], 2, startup=100)
    assert [s.seconds for s in shares] == [110, 110]
    assert sum(len(s.jobs) for s in shares) == 2


def test_never_more_rentals_than_jobs_and_every_job_once():
    shares = pack([5, 1], 4)
    assert len(shares) == 2
    assert sorted(i for s in shares for i in s.jobs) == [0, 1]


def test_equal_jobs_pack_the_same_way_every_time():
    assert pack([30] * 5, 2) == pack([30] * 5, 2)
    assert pack([30] * 5, 2)[0].jobs == (0, 2, 4)


@pytest.mark.parametrize("rentals", [0, -1])
def test_no_rentals_is_refused(rentals):
    with pytest.raises(ValueError):
        pack([1.0], rentals)


def test_negative_durations_are_refused():
    with pytest.raises(ValueError):
        pack([1.0, -1.0], 2)


def test_least_loaded_skips_excluded_rentals():
    assert least_loaded({1: 50.0, 2: 10.0, 3: 10.0}) == 2
    assert least_loaded({1: 50.0, 2: 10.0}, frozenset({2})) == 1
    assert least_loaded({1: 5.0}, frozenset({1})) is None
