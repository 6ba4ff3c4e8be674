"""CPU time of `lorarun --help` and `lorarun --version` against `python -c pass`, measured in this one process.

Each command runs as a child many times, interleaved (so drift and other tenants hit every command alike); the CPU
a child used (user + sys) is read from resource.getrusage(RUSAGE_CHILDREN) before and after it. Printed: the median
seconds of each and its ratio to `python -c pass` (the interpreter's own start-up, the floor no CLI can go under).
The target (issue #22): ≤ 0.15 s CPU for --help and --version. Wall time is not reported: on a shared machine it
mostly measures the neighbours.

    python bench/cli_startup.py [--runs 21] [--lorarun .venv/bin/lorarun] [--compare OTHER/lorarun] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
from pathlib import Path


def child_cpu(cmd: list[str]) -> float:
    """User + sys seconds the child `cmd` used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def default_lorarun() -> str:
    here = Path(sys.executable).with_name("lorarun")
    return str(here) if here.exists() else (shutil.which("lorarun") or "lorarun")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21, help="runs of each command (odd: a true median)")
    ap.add_argument("--lorarun", default=default_lorarun(), help="the lorarun console script to measure")
    ap.add_argument("--compare", default=None, help="another lorarun script (an older checkout's), same loop")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "lorarun --version": [args.lorarun, "--version"],
        "lorarun --help": [args.lorarun, "--help"],
    }
    if args.compare:
        commands["compared --version"] = [args.compare, "--version"]
        commands["compared --help"] = [args.compare, "--help"]
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for cmd in commands.values():  # one warm-up each: the first run pays for cold file caches
        child_cpu(cmd)
    for _ in range(args.runs):
        for name, cmd in commands.items():
            samples[name].append(child_cpu(cmd))
    floor = statistics.median(samples["python -c pass"])
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        rows.append({"command": name, "median_cpu_s": round(median, 4), "ratio_to_python": round(median / floor, 2)})
    print(f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}, {args.runs} runs each, user+sys CPU")
    for row in rows:
        print(f"{row['command']:<20} {row['median_cpu_s']:.3f} s  ×{row['ratio_to_python']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
