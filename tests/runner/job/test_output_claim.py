"""#24: the output claims (runner/job/output_claim.py) and the guard submit/attach use (runner/job/output_guard.py):
one job per output folder + output.name, a dead holder taken over, an earlier run's files never written over unasked,
`--out auto` folders, and report files that do not replace another LoRA's report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from lorarun.runner.errors import UserInputError
from lorarun.runner.job.load import load_job
from lorarun.runner.job.output_claim import OutputClaims, OutputsTaken, OutputTarget
from lorarun.runner.job.output_guard import claimed_for_attach, claimed_outputs, earlier_outputs
from lorarun.runner.job.spec import JobSpec
from lorarun.runner.run.report import summary_lines, write_report
from lorarun.runner.run.report_files import find_report
from lorarun.runner.state import JobState, JobStore


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LORARUN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@dataclass(frozen=True)
class Job:  # what the guard reads of a ValidatedJob: its spec
    spec: JobSpec


def job(tmp_path: Path, name: str = "e2e_lora", folder: str = "a", out: str = "out", unique: bool = False) -> Job:
    where = tmp_path / folder
    where.mkdir(parents=True, exist_ok=True)
    path = where / "job.yaml"
    path.write_text(f"name: {name}\noutput: {{dir: {out}, name: {name}, unique: {str(unique).lower()}}}\n")
    return Job(load_job(path))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # exited and reaped: os.kill(pid, 0) says no such process


def write_claim(claims: OutputClaims, target: OutputTarget, pid: int, job_ids=()) -> None:
    claims.folder.mkdir(parents=True, exist_ok=True)
    claims.path(target).write_text(
        json.dumps(
            {
                "pid": pid,
                "host": os.uname().nodename,
                "command": "submit",
                "since": 0.0,
                "output_dir": str(target.output_dir),
                "name": target.name,
                "token": "theirs",
                "job_file": "/elsewhere/job.yaml",
                "job_ids": list(job_ids),
            }
        )
    )


def new_state(store: JobStore, job_id: str, phase: str, output_dir: Path) -> JobState:
    return store.create(
        JobState(
            job_id=job_id,
            name="e2e_lora",
            job_file="j.yaml",
            provider="vastai",
            output_dir=str(output_dir),
            phase=phase,
        )
    )


def test_a_second_claim_on_the_same_files_is_refused_naming_the_holder(home, tmp_path):
    claims = OutputClaims()
    target = OutputTarget(tmp_path / "out", "e2e_lora")
    first = claims.take(target, command="submit", job_file="/jobs/first.yaml")
    with pytest.raises(OutputsTaken) as refused:
        claims.take(target, command="submit", job_file="/jobs/second.yaml")
    line = str(refused.value)
    assert isinstance(refused.value, UserInputError) and "\n" not in line  # one line, exit 2
    assert f"pid {os.getpid()}" in line and "/jobs/first.yaml" in line
    assert "--out" in line and "output.name" in line
    claims.take(OutputTarget(tmp_path / "out", "other_lora"), command="submit")  # another name: its own claim
    claims.release(first)
    assert not claims.path(target).exists()
    claims.take(target, command="submit")  # free again


def test_two_takers_at_once_one_wins(home, tmp_path):
    claims = OutputClaims()
    target = OutputTarget(tmp_path / "out", "e2e_lora")
    write_claim(claims, target, dead_pid())  # both find a dead holder and race to take it over
    results: list[str] = []
    barrier = threading.Barrier(8)

    def taker():
        barrier.wait()
        try:
            claims.take(target, command="submit")
            results.append("won")
        except OutputsTaken:
            results.append("refused")

    threads = [threading.Thread(target=taker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["refused"] * 7 + ["won"]


def test_a_dead_holders_claim_is_taken_over(home, tmp_path):
    claims = OutputClaims()
    target = OutputTarget(tmp_path / "out", "e2e_lora")
    write_claim(claims, target, dead_pid())
    mine = claims.take(target, command="submit")
    assert claims.read(target).token == mine.token and mine.pid == os.getpid()
    claims.path(target).write_text("{half a claim")  # a crash mid-write: unreadable reads as dead
    assert claims.take(target, command="submit").pid == os.getpid()


def test_an_unfinished_job_keeps_its_claim_after_its_controller_died(home, tmp_path):
    store, claims = JobStore(), OutputClaims()
    target = OutputTarget(tmp_path / "out", "e2e_lora")
    new_state(store, "e2e-lora-abc123", "train", target.output_dir)
    write_claim(claims, target, dead_pid(), job_ids=["e2e-lora-abc123"])
    with pytest.raises(OutputsTaken) as refused:
        claims.take(target, command="submit")
    assert "job e2e-lora-abc123" in str(refused.value) and "lorarun attach e2e-lora-abc123" in str(refused.value)
    # attach of that very job re-takes it; another job id would not
    with pytest.raises(OutputsTaken):
        claims.take(target, command="attach", job_ids=["someone-else"])
    claim = claims.take(target, command="attach", job_ids=["e2e-lora-abc123"])
    claims.release(claim)
    assert claims.path(target).exists()  # still unfinished: the claim stays for the next attach
    store.update(store.load("e2e-lora-abc123"), phase="done")
    claims.release(claims.read(target))
    assert not claims.path(target).exists()


def test_release_never_removes_a_claim_taken_over_by_another(home, tmp_path):
    claims = OutputClaims()
    target = OutputTarget(tmp_path / "out", "e2e_lora")
    mine = claims.take(target, command="submit")
    write_claim(claims, target, os.getpid())  # someone took it over (thought us dead); token "theirs"
    claims.release(mine)
    assert claims.read(target).token == "theirs"
    assert claims.add_jobs(mine, ["x"]) == mine and claims.read(target).job_ids == ()


def test_add_jobs_names_the_jobs_and_keeps_the_claim_for_an_unfinished_one(home, tmp_path):
    store, claims = JobStore(), OutputClaims()
    (a,) = [job(tmp_path)]
    with claimed_outputs([a]) as claimed:

        @dataclass
        class Run:
            job: Job
            state: JobState

        state = new_state(store, "e2e-lora-def456", "train", a.spec.output_dir)
        claimed.add_runs([Run(a, state)])
        target = OutputTarget(a.spec.output_dir.resolve(), "e2e_lora")
        assert claims.read(target).job_ids == ("e2e-lora-def456",)
    assert claims.path(target).exists()  # the block ended with the job unfinished (Ctrl-C, a crash)


def test_an_earlier_runs_files_are_refused_unless_overwrite_or_auto(home, tmp_path):
    a = job(tmp_path)
    out = a.spec.output_dir
    out.mkdir()
    (out / "e2e_lora-000001.safetensors").write_bytes(b"old checkpoint")
    with pytest.raises(OutputsTaken) as refused:
        with claimed_outputs([a]):
            pass
    line = str(refused.value)
    assert "e2e_lora-000001.safetensors is an earlier run's output" in line
    assert "--out auto" in line and "--overwrite" in line
    assert not OutputClaims().folder.exists() or not list(OutputClaims().folder.glob("*.json"))  # released
    with claimed_outputs([a], overwrite=True) as claimed:
        assert claimed.jobs[0].spec.output_dir == out
    with claimed_outputs([a], auto=True) as claimed:
        assert claimed.jobs[0].spec.output_dir == (out / "e2e_lora-1").resolve()
    assert not (out / "e2e_lora-1").exists()  # nothing was written there: the empty folder is not left behind
    other = job(tmp_path, name="other_lora", folder="a2", out=str(out))
    with claimed_outputs([other]):  # another LoRA's files in the same folder do not stop it
        pass


def test_out_auto_gives_two_jobs_at_once_two_folders(home, tmp_path):
    a, b = job(tmp_path, folder="a"), job(tmp_path, folder="b", out=str(tmp_path / "a" / "out"))
    with claimed_outputs([a], auto=True) as first, claimed_outputs([b], auto=True) as second:
        one, two = first.jobs[0].spec.output_dir, second.jobs[0].spec.output_dir
        assert one != two and one.is_dir() and two.is_dir()
        assert {one.name, two.name} == {"e2e_lora-1", "e2e_lora-2"}
    unique = job(tmp_path, folder="c", unique=True)  # output.unique: true is `--out auto` from the job file
    with claimed_outputs([unique]) as claimed:
        assert claimed.jobs[0].spec.output_dir.name == "e2e_lora-1"


def test_a_batch_aiming_two_jobs_at_one_file_is_refused(home, tmp_path):
    a = job(tmp_path, folder="a", out=str(tmp_path / "shared"))
    b = job(tmp_path, folder="b", out=str(tmp_path / "shared"))
    with pytest.raises(OutputsTaken) as refused:
        with claimed_outputs([a, b]):
            pass
    assert "would both write" in str(refused.value)
    assert not list(OutputClaims().folder.glob("*.json")) if OutputClaims().folder.exists() else True


def test_a_claimed_batch_refuses_a_second_submit_of_one_of_its_jobs(home, tmp_path):
    a = job(tmp_path, name="alpha", folder="a", out=str(tmp_path / "shared"))
    b = job(tmp_path, name="beta", folder="b", out=str(tmp_path / "shared"))
    with claimed_outputs([a, b]):
        with pytest.raises(OutputsTaken):
            with claimed_outputs([job(tmp_path, name="beta", folder="c", out=str(tmp_path / "shared"))]):
                pass


def test_attach_takes_back_its_own_claim_but_not_another_jobs(home, tmp_path):
    store = JobStore()
    a = job(tmp_path)
    with claimed_outputs([a]) as held:  # a live submit holds the files for a job that is not this one
        with pytest.raises(OutputsTaken):
            with claimed_for_attach(a, "some-other-job", command="attach"):
                pass
        del held
    new_state(store, "e2e-lora-aaa111", "pull", a.spec.output_dir)
    write_claim(OutputClaims(), OutputTarget(a.spec.output_dir.resolve(), "e2e_lora"), dead_pid(), ["e2e-lora-aaa111"])
    with claimed_for_attach(a, "e2e-lora-aaa111", command="attach") as claim:
        assert claim.pid == os.getpid() and claim.command == "attach"


def test_earlier_outputs_lists_the_lora_checkpoints_grid_and_its_report(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = OutputTarget(out, "e2e_lora")
    assert earlier_outputs(target) == []
    for name in ("e2e_lora.safetensors", "e2e_lora-000002.safetensors", "e2e_lora_grid.png", "e2e_lora2.safetensors"):
        (out / name).write_bytes(b"x")
    (out / "report.json").write_text(json.dumps({"job_id": "j1", "output_name": "e2e_lora"}))
    assert {p.name for p in earlier_outputs(target)} == {
        "e2e_lora.safetensors",
        "e2e_lora-000002.safetensors",
        "e2e_lora_grid.png",
        "report.json",
    }


def test_a_second_lora_in_the_folder_writes_its_report_beside_the_first(tmp_path):
    out = tmp_path / "out"
    write_report(out, {"job_id": "job-a", "name": "a", "output_name": "alpha", "outcome": "finished"}, [])
    before = (out / "report.json").read_bytes()
    paths = write_report(out, {"job_id": "job-b", "name": "b", "output_name": "beta", "outcome": "finished"}, [])
    assert [p.name for p in paths] == ["beta.report.json", "beta.report.md", "beta.report.html"]
    assert (out / "report.json").read_bytes() == before  # the first run's report survives
    assert find_report(out, "job-a")[1]["output_name"] == "alpha"
    assert find_report(out, "job-b")[0] == out / "beta.report.json"

    @dataclass
    class State:
        job_id: str
        output_dir: str
        history: tuple = ()
        created_at: float = 0.0

    (out / "beta.safetensors").write_bytes(b"x")
    lines = summary_lines(State("job-b", str(out)), out, "beta", now=1.0)
    assert f"report  {out / 'beta.report.html'}" in lines
    # the same LoRA again (asked for with --overwrite) and the same job (a resumed run) replace report.*
    assert write_report(out, {"job_id": "job-c", "output_name": "alpha"}, [])[0].name == "report.json"


def test_out_auto_skips_a_folder_an_unfinished_job_still_claims_and_keeps_its_own(home, tmp_path):
    store = JobStore()
    a = job(tmp_path)
    out = a.spec.output_dir
    held = OutputTarget((out / "e2e_lora-1").resolve(), "e2e_lora")  # detached while empty: no folder, a claim
    new_state(store, "e2e-lora-bbb222", "train", held.output_dir)
    write_claim(OutputClaims(), held, dead_pid(), ["e2e-lora-bbb222"])
    with claimed_outputs([a], auto=True) as claimed:
        assert claimed.jobs[0].spec.output_dir.name == "e2e_lora-2"

        @dataclass
        class Run:
            job: Job
            state: JobState

        mine = new_state(store, "e2e-lora-ccc333", "train", claimed.jobs[0].spec.output_dir)
        claimed.add_runs([Run(claimed.jobs[0], mine)])
    assert (out / "e2e_lora-2").is_dir()  # left unfinished (detached): its folder stays for `attach`
    assert OutputClaims().read(held).job_ids == ("e2e-lora-bbb222",)  # the other job's claim, untouched


def test_a_batch_jobs_replacement_attempt_joins_its_claim(home, tmp_path):
    """A job moved to a replacement rental (runner/batch/fanout.py) gets a new job id: the claim names it, so the
    claim still holds if the controller dies while that attempt is unfinished."""
    from lorarun.runner.batch.fanout import BatchRun, RentalSlot
    from lorarun.runner.batch.record import BatchJob, BatchRecord, BatchStore
    from lorarun.runner.run.pipeline import JobRun

    store = JobStore()
    a = job(tmp_path)
    with claimed_outputs([a]) as claimed:
        first = new_state(store, "e2e-lora-ddd444", "failed", a.spec.output_dir)
        run = JobRun(job=a, state=first, predicted_cost=None)
        claimed.add_runs([run])
        batch = BatchRun.__new__(BatchRun)  # the parts of a running batch that _moved uses
        batch.store, batch.batches, batch.provider_name = store, BatchStore(store), "vastai"
        batch.record = batch.batches.save(
            BatchRecord("batch-x", "vastai", 1, (BatchJob(a.spec.name, str(a.spec.source), (first.job_id,), 1),))
        )
        batch.on_moved = lambda moved: claimed.add_runs([moved])
        moved = batch._moved(RentalSlot(number=1, runs=[run], ranked=[]), run, RuntimeError("machine gone"))
        store.release(moved.state.job_id)
        target = OutputTarget(a.spec.output_dir.resolve(), "e2e_lora")
        assert OutputClaims().read(target).job_ids == (first.job_id, moved.state.job_id)
    assert OutputClaims().path(target).exists()  # the new attempt is unfinished: the claim outlives the block
