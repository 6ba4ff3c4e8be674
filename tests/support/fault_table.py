"""The fault suite's table: each fault test appends one row (a JSON line) to a folder shared by every pytest
worker; the controlling process prints the table and the totals at the end of the run (`make faults`).

The totals the suite is judged by: faults injected (≥ 30), instances left alive (0) and outputs lost (0).
With this plugin loaded, totals that miss those figures fail the run even when every test passed."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

RESULTS_ENV = "LORARUN_FAULT_RESULTS"
MIN_FAULTS = 30


@dataclass(frozen=True)
class FaultRow:
    test: str
    faults: tuple[str, ...]
    expected: str
    observed: str
    passed: bool
    instances_alive: int
    outputs_lost: int


def results_dir() -> Path | None:
    """None when the plugin is not loaded (a fault test run on its own): nothing is recorded then."""
    folder = os.environ.get(RESULTS_ENV)
    return Path(folder) if folder else None


def append_row(folder: Path, row: FaultRow) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps(asdict(row)) + "\n"
    fd = os.open(folder / f"rows-{os.getpid()}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def read_rows(folder: Path) -> list[FaultRow]:
    rows = []
    for path in sorted(folder.glob("rows-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            data = json.loads(line)
            data["faults"] = tuple(data["faults"])
            rows.append(FaultRow(**data))
    return sorted(rows, key=lambda r: r.test)


# ---- pytest plugin (`-p support.fault_table`, as `make faults` loads it) ------------------------------------------
def pytest_configure(config):
    # The controller picks the folder; xdist workers inherit it through the environment.
    if RESULTS_ENV not in os.environ:
        import tempfile

        os.environ[RESULTS_ENV] = tempfile.mkdtemp(prefix="lorarun-faults-")


def _totals(rows: list[FaultRow]) -> tuple[int, int, int]:
    return (sum(len(r.faults) for r in rows), sum(r.instances_alive for r in rows), sum(r.outputs_lost for r in rows))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):
        return
    injected, alive, lost = _totals(read_rows(Path(os.environ[RESULTS_ENV])))
    if (alive or lost or injected < MIN_FAULTS) and session.exitstatus == 0:
        session.exitstatus = 1  # the totals are the suite's verdict, not only the tests' asserts


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput"):
        return
    rows = read_rows(Path(os.environ[RESULTS_ENV]))
    tr = terminalreporter
    tr.section("fault table")
    w_fault, w_exp = 46, 44
    tr.write_line(f"{'fault':{w_fault}} {'expected':{w_exp}} observed")
    for row in rows:
        kinds = sorted(set(row.faults))
        fault = f"{kinds[0]} ×{len(row.faults)}" if len(kinds) == 1 and len(row.faults) > 1 else ", ".join(kinds)
        if "[" in row.test:
            fault += " [" + row.test.split("[", 1)[1]
        verdict = "ok" if row.passed else "FAILED"
        extra = "".join(
            [
                f", {row.instances_alive} LEFT ALIVE" if row.instances_alive else "",
                f", {row.outputs_lost} OUTPUT(S) LOST" if row.outputs_lost else "",
            ]
        )
        tr.write_line(
            f"{fault[:w_fault]:{w_fault}} {row.expected[:w_exp]:{w_exp}} {verdict}{extra}: {row.observed}"[:260]
        )
    injected, alive, lost = _totals(rows)
    failed = sum(not r.passed for r in rows)
    tr.write_line("")
    tr.write_line(
        f"faults injected: {injected}   scenarios: {len(rows)} ({failed} failed)   "
        f"instances left alive: {alive}   outputs lost: {lost}",
        bold=True,
    )
    if alive or lost or injected < MIN_FAULTS:
        tr.write_line(f"fault totals not met: need >= {MIN_FAULTS} injected, 0 left alive, 0 lost", red=True)
