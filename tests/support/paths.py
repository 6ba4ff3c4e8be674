"""Where the repository's own folders are, for tests that read them (jobs/, bench/, the Dockerfile, DESIGN.md).

One place, so a test that moves to another folder of tests/ (they mirror the source tree) keeps finding them."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
BENCH = REPO / "bench"
