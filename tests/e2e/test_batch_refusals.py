"""A batch refused before anything is rented (issue 19's one budget, issue 24's distinct outputs): exit 2, one
`error:` line naming what is wrong, no traceback, and not one create call reached the fake Vast.ai API (its
request log, the same one vast-cli's `create instance` PUT /asks/{id}/ would hit). Nothing trains here."""

from __future__ import annotations

from support.batch_jobs import batch_jobs

from lorarun.runner.batch.plan import plan_batch
from lorarun.runner.cli.app import main
from lorarun.runner.job.validate import validate_job
from lorarun.runner.run.connect import make_provider
from lorarun.runner.state import JobStore


def creates(cloud) -> list:
    return [r for r in cloud.fake.requests if r.method == "PUT" and "/asks/" in r.path]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_a_batch_over_max_cost_is_refused_though_each_rental_fits(vast_cloud, tmp_path, capsys):
    paths = batch_jobs(tmp_path, vast_cloud.name, ["a", "b", "c", "d", "e", "f"])
    jobs = [validate_job(p) for p in paths]
    plan = plan_batch(make_provider(jobs[0].spec.resources), jobs, 3)
    dearest_rental = max(r.estimate.total_cost for r in plan.rentals)
    assert dearest_rental < plan.total_cost  # three rentals, each cheaper than the batch
    # Every rental's own estimate is under this, only the batch's total is over: max_cost covers the batch.
    max_cost = (dearest_rental + plan.total_cost) / 2
    code = main(["submit", *paths, "--rentals", "3", "--yes", "--max-cost", f"{max_cost:.6f}"])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    (line,) = error_lines(err)
    assert "max_cost" in line and "Traceback" not in err
    assert "for the whole batch" in err  # the plan line said what the budget covers
    assert creates(vast_cloud) == []
    assert JobStore().all() == []  # no job state, no batch: nothing was started


def test_a_batch_within_max_cost_is_not_refused_by_the_budget(vast_cloud, tmp_path, capsys):
    """The other side of the line above: the same batch with max_cost just over its total gets past the
    estimate (and then stops at the prompt, since --yes is not given and nobody is there to answer)."""
    paths = batch_jobs(tmp_path, vast_cloud.name, ["a", "b", "c"])
    jobs = [validate_job(p) for p in paths]
    total = plan_batch(make_provider(jobs[0].spec.resources), jobs, 3).total_cost
    code = main(["submit", *paths, "--rentals", "3", "--max-cost", f"{total * 1.5:.6f}"])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = error_lines(err)
    assert "--yes" in line and "max_cost" not in line  # refused for the missing yes, not for the budget
    assert creates(vast_cloud) == []


def test_two_jobs_of_a_batch_writing_one_lora_are_refused_naming_both(vast_cloud, tmp_path, capsys):
    shared = tmp_path / "shared-out"
    paths = batch_jobs(tmp_path, vast_cloud.name, ["a", "b", "c"])
    for path in paths[:2]:  # a and b: their own names, one output folder and one output name
        with open(path, encoding="utf-8") as f:
            text = f.read()
        text = text.replace("output: {dir: out, name: a}", f'output: {{dir: "{shared}", name: same}}')
        text = text.replace("output: {dir: out, name: b}", f'output: {{dir: "{shared}", name: same}}')
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    code = main(["submit", *paths, "--rentals", "2", "--yes"])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    (line,) = error_lines(err)
    assert paths[0] in line and paths[1] in line and "both write" in line
    assert "Traceback" not in err
    assert creates(vast_cloud) == []
    assert JobStore().all() == []
