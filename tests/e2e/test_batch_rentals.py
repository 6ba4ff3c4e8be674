"""`lorarun submit JOB... --rentals N`: eight jobs over three rentals side by side on the fake Vast.ai API (real
sshd instances, the real engine on CPU): every LoRA home and verified, every instance destroyed and confirmed gone.
The wall-time ratio (batch ÷ the longest job alone) is measured by bench/batch_wall.py, never asserted here: the
bench runs both tests of this file in one process, with the fake instances' steps paced to a simulated GPU's step
time (image/step_pacing.py), and reads the walls each run writes."""

from __future__ import annotations

import json
import os

import pytest
from support.batch_jobs import assert_dataset_uploaded_once_per_rental, assert_home_and_verified, batch_job

from lorarun.image.step_pacing import PACE_ENV
from lorarun.runner.batch.record import BatchStore
from lorarun.runner.cli.app import main
from lorarun.runner.price.calibration_load import measurements_path
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

WALL_ENV = "LORARUN_BENCH_BATCH_WALL"  # bench/batch_wall.py: the folder each test writes its measurements to
STEP_ENV = "LORARUN_BENCH_STEP_SECONDS"  # bench/batch_wall.py: the simulated GPU step time for the fake instances


def paced(cloud) -> float:
    """The bench's step time goes into every fake instance's environment (never the job file); 0: unpaced."""
    seconds = float(os.environ.get(STEP_ENV) or 0)
    if seconds > 0:
        cloud.host.extra_env[PACE_ENV] = str(seconds)
    return seconds


def learned_from_the_baseline() -> None:
    """Under the bench only: the batch plans with what lorarun measured on the baseline run just before (its
    calibration.jsonl: the simulated GPU's step time, the engine's start-up), as it would for a user who trained
    on these machines before; each test has its own lorarun home, so the baseline leaves its measurements in the
    bench's folder. Without them the plan sizes the paced jobs by the shipped table's guess for a real GPU (20 s
    for a job that trains 8 minutes) and packs a short job behind the long one. Runs without the bench (and
    without a baseline) plan from the shipped table, as a first batch does."""
    folder = os.environ.get(WALL_ENV)
    learned = os.path.join(folder, "calibration.jsonl") if folder else None
    if learned and os.path.exists(learned):
        measurements_path().parent.mkdir(parents=True, exist_ok=True)
        with open(learned, "rb") as src, open(measurements_path(), "ab") as dst:
            dst.write(src.read())


def long_job(tmp_path, provider):
    """The batch's longest job: four epochs where the others train one."""
    return batch_job(tmp_path / "long", "long", provider, epochs=4, data=tmp_path / "data")


def eight_jobs(tmp_path, provider):
    """One long job and seven short ones, all on one dataset folder: packed longest first, the long one has a
    rental to itself, and each rental uploads the shared dataset once."""
    data = tmp_path / "data"
    jobs = [long_job(tmp_path, provider)]
    jobs += [batch_job(tmp_path / f"s{n}", f"short{n}", provider, data=data) for n in range(7)]
    return jobs


def test_eight_jobs_over_three_rentals(vast_cloud, tmp_path, capsys):
    step_s = paced(vast_cloud)
    learned_from_the_baseline()
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
    write_measurements("batch", record, states, step_s, captured.err)


@pytest.mark.skipif(not os.environ.get(WALL_ENV), reason="bench/batch_wall.py's baseline only (one job, one rental)")
def test_longest_job_alone(vast_cloud, tmp_path, capsys):
    """The bench's baseline: the batch's longest job as a batch of its own, on one rental, paced the same way."""
    step_s = paced(vast_cloud)
    code = main(["submit", str(long_job(tmp_path, vast_cloud.name)), "--rentals", "3", "--yes"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    (record,) = BatchStore().all()
    assert record.rentals == 1 and [j.name for j in record.jobs] == ["long"]
    (state,) = BatchStore().states(record)
    assert state.phase == "done" and state.instance_destroyed, state.message
    assert_home_and_verified(tmp_path, state)
    assert vast_cloud.instance_ids() == [] and not vast_cloud.host.alive(state.instance_id)
    write_measurements("alone", record, [state], step_s, captured.err)
    if folder := os.environ.get(WALL_ENV):  # what lorarun learned here, for the batch's plan (above)
        with open(os.path.join(folder, "calibration.jsonl"), "wb") as f:
            f.write(measurements_path().read_bytes())


def write_measurements(name: str, record, states, step_s: float, err: str) -> None:
    """For bench/batch_wall.py (only when it runs this file): what this very run measured, from the jobs' records,
    and the plan lorarun printed before renting (its predicted wall time)."""
    if folder := os.environ.get(WALL_ENV):
        plan = next((" ".join(line.split()) for line in err.splitlines() if line.startswith("plan: ")), None)
        with open(os.path.join(folder, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump({**wall_measurements(record, states), "step_seconds": step_s, "plan": plan}, f, indent=1)


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
    """From the jobs' own phase times (seconds since the run's first job was created). The run's wall: its first job
    created → its last job ended (its instance destroyed). Per job: its phases and, as the older estimate of a job
    on a rental of its own, its `turn_s`: its rental's start-up (first job created → its upload) plus its own turn
    there (its upload → the next job's upload, or the teardown). Per rental: when it was up and when it ended."""
    start = min(s.history[0][1] for s in states)
    by_name = {s.name: s for s in states}

    def first(state, phase):
        return next(at for p, at in state.history if p == phase)

    jobs, rentals = {}, {}
    for rental in sorted({j.rental for j in record.jobs}):
        on_it = sorted((by_name[j.name] for j in record.jobs if j.rental == rental), key=lambda s: first(s, "upload"))
        startup = first(on_it[0], "upload") - on_it[0].history[0][1]
        for k, state in enumerate(on_it):
            end = first(on_it[k + 1], "upload") if k + 1 < len(on_it) else first(state, "teardown")
            jobs[state.name] = {
                "rental": rental,
                "phases": phase_seconds(state),
                "training": [round(first(state, "monitor") - start, 2), round(first(state, "finish") - start, 2)],
                "turn_s": round(startup + end - first(state, "upload"), 2),
                "pacing": pacing_summary(state),
            }
        rentals[str(rental)] = {
            "jobs": [s.name for s in on_it],
            "up_s": round(first(on_it[0], "upload") - start, 2),
            "end_s": round(max(s.history[-1][1] for s in on_it) - start, 2),
        }
    return {"wall_s": round(max(s.history[-1][1] for s in states) - start, 2), "rentals": rentals, "jobs": jobs}


def phase_seconds(state) -> dict[str, float]:
    """How long each of the job's phases took (a phase repeated, e.g. after a fallback, adds up)."""
    spans: dict[str, float] = {}
    for (phase, at), (_, then) in zip(state.history, state.history[1:]):
        spans[phase] = round(spans.get(phase, 0.0) + then - at, 2)
    return spans


def pacing_summary(state) -> dict | None:
    """The engine's `step_pacing` event (image/step_pacing.py): how much of each paced step was real CPU work."""
    events = JobStore().job_dir(state.job_id) / "events.jsonl"
    for line in events.read_text(encoding="utf-8").splitlines() if events.exists() else ():
        if '"step_pacing"' in line:
            return json.loads(line)
    return None
