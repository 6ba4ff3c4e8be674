"""bench/ stands on its own (issue 22): no benchmark imports from tests/ or reaches into it through sys.path, so a
benchmark measures lorarun and its own fixtures, and the test tree can change without breaking one."""

from __future__ import annotations

import ast

from support.paths import BENCH


def imported_modules(source: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_bench_imports_nothing_from_tests():
    scripts = sorted(BENCH.glob("*.py"))
    assert scripts, "bench/ has no scripts"
    offenders = []
    for path in scripts:
        source = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: import {m}" for m in imported_modules(source) if m.split(".")[0] == "tests"]
        if "sys.path" in source and "tests" in source.split("sys.path", 1)[1].split("\n", 1)[0]:
            offenders.append(f"{path.name}: puts tests/ on sys.path")
    assert not offenders, offenders


def test_the_check_sees_an_import_from_tests():
    assert imported_modules("from tests.support.sshd import SshdServer\nimport tests.fakes\n") == [
        "tests.support.sshd",
        "tests.fakes",
    ]


def test_the_upload_bench_has_its_own_loopback_sshd():
    assert "loopback_sshd" in imported_modules((BENCH / "upload_bench.py").read_text(encoding="utf-8"))


def test_one_engine_benchmark():
    """Every engine measure is a mode of bench/engine_throughput.py (Flux: `--models flux`, from flux_step.py):
    one script to run on a lent GPU, one JSON to read, no second copy of the timing loop drifting apart."""
    entry_points = []
    for path in sorted(BENCH.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        uses_engine = any(m.startswith("lorarun.image.engine") for m in imported_modules(source))
        if uses_engine and '__name__ == "__main__"' in source:
            entry_points.append(path.name)
    assert entry_points == ["engine_throughput.py"]
