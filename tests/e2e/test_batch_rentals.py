"""`lorarun submit JOB... --rentals N`: eight jobs over three rentals side by side on the fake Vast.ai API (real
sshd instances, the real engine on CPU): every LoRA home and verified, every instance destroyed and confirmed gone.
The wall-time ratio (batch ÷ longest job) is measured by bench/batch_wall.py, never asserted here."""

from __future__ import annotations

import json
import os

import pytest
from support.batch_jobs import assert_dataset_uploaded_once_per_rental, assert_home_and_verified, batch_job

from lorarun.runner.batch.record import BatchStore
from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def eight_jobs(tmp_path, provider):
    """One long job and seven short ones, all on one dataset folder: packed longest first, the long one has a
    rental to itself, and each rental uploads the shared dataset once."""
    data = tmp_path / "data"
    jobs = [batch_job(tmp_path / "long", "long", provider, epochs=4, data=data)]
    jobs += [batch_job(tmp_path / f"s{n}", f"short{n}", provider, data=data) for n in range(7)]
    return jobs


def test_eight_jobs_over_three_rentals(vast_cloud, tmp_path, capsys):
    jobs = eight_jobs(tmp_path, vast_cloud.name)
    code = main(["submit", *map(str, jobs), "--rentals", "3", "--yes"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    (record,) = BatchStore().all()
    assert record.rentals == 3 and len(record.jobs) == 8
    states = BatchStore().states(record)
    assert all(s.phase == "done" and s.instance_destroyed for s in states), [s.message for s in states]
    for state in states:
        assert_home_and_verified(tmp_path, state)
    instances = {s.instance_id for s in states}
    assert len(instances) == 3  # three rentals, no more
    creates = [r for r in vast_cloud.fake.requests if r.method == "PUT" and "/asks/" in r.path]
    assert len(creates) == 3
    assert vast_cloud.instance_ids() == []  # destroyed at the provider...
    assert not any(vast_cloud.host.alive(i) for i in instances)  # ...and their sshd is gone
    # Longest first onto the least-loaded rental: the long job alone on its rental, the others spread over two.
    by_rental: dict[int, list[str]] = {}
    for job in record.jobs:
        by_rental.setdefault(job.rental, []).append(job.name)
    assert sorted(by_rental) == [1, 2, 3] and sum(map(len, by_rental.values())) == 8
    assert by_rental[1][0] == "long"  # the longest job goes first, onto rental 1
    assert len(by_rental[1]) == min(len(v) for v in by_rental.values())  # and its rental takes the fewest
    assert "batch report" in captured.out
    html = (JobStore().home / "batches" / f"{record.batch_id}.html").read_text()
    assert all(f">{s.name}<" in html for s in states)
    assert_dataset_uploaded_once_per_rental(vast_cloud, tmp_path / "data", states)
    assert_rentals_ran_side_by_side(states)
    if out := os.environ.get(WALL_ENV):  # bench/batch_wall.py: the ratio it reports, measured on this very run
        with open(out, "w", encoding="utf-8") as f:
            json.dump(wall_measurements(record, states), f, indent=1)


WALL_ENV = "LORARUN_BENCH_BATCH_WALL"


def assert_rentals_ran_side_by_side(states):
    """Every rental was up (a job of it uploading) before the first job of the batch ended: an order of events
    in the jobs' own records, not a duration."""
    up: dict[str, float] = {}
    for state in states:
        for phase, at in state.history:
            if phase == "upload":
                up[state.instance_id] = min(at, up.get(state.instance_id, at))
    first_end = min(s.history[-1][1] for s in states)
    assert len(up) == 3 and max(up.values()) < first_end, (up, first_end)


def wall_measurements(record, states) -> dict:
    """From the jobs' own phase times. The batch's wall: its first job created → its last job ended. A job alone:
    its rental's start-up (the rental's first job created → its upload) plus its own turn on the rental (its
    upload → the next job's upload there, or the rental's teardown): what it would take on a rental of its own."""
    batch_start = min(s.history[0][1] for s in states)
    batch_end = max(s.history[-1][1] for s in states)
    by_name = {s.name: s for s in states}

    def first(state, phase):
        return next(at for p, at in state.history if p == phase)

    alone = {}
    for rental in sorted({j.rental for j in record.jobs}):
        on_it = [by_name[j.name] for j in record.jobs if j.rental == rental]
        on_it.sort(key=lambda s: first(s, "upload"))
        startup = first(on_it[0], "upload") - on_it[0].history[0][1]
        for k, state in enumerate(on_it):
            end = first(on_it[k + 1], "upload") if k + 1 < len(on_it) else first(state, "teardown")
            alone[state.name] = startup + end - first(state, "upload")
    longest = max(alone, key=alone.get)
    wall = batch_end - batch_start
    return {
        "batch_wall_s": round(wall, 2),
        "longest_job": longest,
        "longest_job_s": round(alone[longest], 2),
        "ratio": round(wall / alone[longest], 3),
        "rentals": {
            str(r): [j.name for j in record.jobs if j.rental == r] for r in sorted({j.rental for j in record.jobs})
        },
    }
