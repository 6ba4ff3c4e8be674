# Fault tests run against the fake Vast.ai API (`vast_cloud`); the provider-specific ones (destroy storms, the
# agent's self-destroy with the instance-scoped key) run against both fakes (`cloud`).
#
# Every fault test also records one row for the suite's table (`make faults`): the fault(s) injected, what was
# expected, what was observed, and two numbers measured here rather than claimed by the test — instances the fake
# provider still holds (or whose sshd still runs) when the test ends, and outputs the controller saw the engine
# write (an output event in the job's local events.jsonl) that are not home with that sha256.
from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cloud import cloud, runpod_cloud, vast_cloud  # noqa: F401
from support.fault_table import FaultRow, append_row, results_dir
from support.fixtures import recorded_sleeps, ssh_params, ssh_transport, sshd_host, sshd_server  # noqa: F401
from support.readonly import read_only_folder  # noqa: F401


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.fault_call_report = report


class FaultLog:
    def __init__(self) -> None:
        self.faults: list[str] = []
        self.expected = ""
        self.observed: list[str] = []
        self.bad_on_instance: set[str] = set()  # outputs the test spoilt on the instance itself
        self.gone_with_instance: set[str] = set()  # job attempts whose instance the test made vanish, disk and all

    def inject(self, what: str, expected: str | None = None) -> None:
        """One injected fault (call once per fault: a storm of six 5xx is six)."""
        self.faults.append(what)
        if expected:
            self.expected = expected

    def observe(self, what: str) -> None:
        self.observed.append(what)

    def nobody_returns(self) -> None:
        """The scenario's user never comes back (controller killed for good, no attach): what the instance made after
        the controller died ends with the instance at its deadline, which is the lease's whole purpose. Such outputs
        are reported in the row as left behind, not counted as lost: whether the dead controller had seen their event
        before it was killed is a race that says nothing about lorarun."""
        self.left_behind_by_design = True

    left_behind_by_design = False

    def vanished_with(self, job_id: str) -> None:
        """The test made this job attempt's instance vanish with its disk (a provider taking the machine back): what
        it made and had not yet sent home went with it. The scenario must then show the job re-made on another
        rental (its own assertions); the row says how many went with the instance instead of counting them lost."""
        self.gone_with_instance.add(job_id)

    def bad_at_the_source(self, rel: str) -> None:
        """The test corrupts this output on the instance's own disk: no controller can bring home bytes that no
        longer exist anywhere, so it is reported in the row (and must be said to the user), not counted as lost."""
        self.bad_on_instance.add(rel)


def _instances_alive(clouds) -> int:
    alive = set()
    for c in clouds:
        alive.update(f"{c.name}:{i}" for i in c.instance_ids())
        alive.update(f"{c.name}:{i}" for i in c.host.servers if c.host.alive(i))
    return len(alive)


def _outputs_lost(
    home: Path, spoilt_on_instance: frozenset[str] = frozenset(), skip_jobs: frozenset[str] = frozenset()
) -> int:
    """Outputs the engine announced (events the controller pulled) that are not in the output folder intact, less
    those the test itself spoilt on the instance's disk."""
    from lorarun.sshlink.sftp_io import sha256_file

    lost = 0
    jobs = home / "jobs"
    if not jobs.is_dir():
        return 0
    for job_dir in jobs.iterdir():
        if job_dir.name in skip_jobs:
            continue
        events = job_dir / "events.jsonl"
        state = job_dir / "state.json"
        if not events.is_file() or not state.is_file():
            continue
        out = Path(json.loads(state.read_text()).get("output_dir") or "")
        latest: dict[str, str] = {}
        for line in events.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("sha256") and event.get("path"):
                latest[event["path"]] = event["sha256"]
        for rel, sha in latest.items():
            if rel in spoilt_on_instance:
                continue
            local = out / rel
            if not local.is_file() or sha256_file(local) != sha:
                lost += 1
    return lost


@pytest.fixture
def fault(request):
    """Record this test's faults for the table; clouds are looked up first so they are torn down after us."""
    clouds = [request.getfixturevalue(n) for n in ("cloud", "vast_cloud", "runpod_cloud") if n in request.fixturenames]
    log = FaultLog()
    yield log
    from lorarun.runner.state import JobStore

    report = getattr(request.node, "fault_call_report", None)
    home = JobStore().home
    folder = results_dir()
    if folder is None:
        return
    observed = "; ".join(log.observed) or ("as expected" if report is not None and report.passed else "-")
    lost = _outputs_lost(Path(home), frozenset(log.bad_on_instance), frozenset(log.gone_with_instance))
    if log.gone_with_instance:
        gone = _outputs_lost(Path(home), frozenset(log.bad_on_instance)) - lost
        observed += (
            f"; {gone} output(s) went with the vanished instance before they could be pulled (re-made elsewhere)"
        )
    if log.bad_on_instance:
        observed += f"; {len(log.bad_on_instance)} output(s) corrupted on the instance by the test (said, not lost)"
    if lost and log.left_behind_by_design:
        observed += f"; {lost} output(s) left on the instance (nobody came back before its deadline)"
        lost = 0
    append_row(
        folder,
        FaultRow(
            test=request.node.name,
            faults=tuple(log.faults) or (request.node.name,),
            expected=log.expected,
            observed=observed,
            passed=bool(report is not None and report.passed),
            instances_alive=_instances_alive(clouds),
            outputs_lost=lost,
        ),
    )
