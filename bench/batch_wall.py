"""A batch's wall time against its longest job alone (issue 19: ≤ 1.3×), measured on the fakes.

    python bench/batch_wall.py [--step-seconds S] [--json out.json]

Runs, in one pytest process, the two tests of tests/e2e/test_batch_rentals.py on the fake Vast.ai API (real sshd
instances, the real engine on CPU writing real LoRA files that are pulled and verified):
- `test_eight_jobs_over_three_rentals`: eight jobs, one of them four times longer, over three rentals;
- `test_longest_job_alone`: that longest job as a batch of its own, on one rental (the baseline).
Each writes what its jobs' own phase records say; the ratio is batch wall ÷ longest-job-alone wall, each from the
first job created to the last instance destroyed.

A CPU-only run models "each rental has its own GPU" with a simulated GPU step time (image/step_pacing.py, a
test-only knob the tests put into the fake instances' environment): every optimizer step takes at least S seconds
of wall time, the engine sleeping what its real CPU work left. S is chosen well above the tiny model's CPU work
per step (the report prints the measured share), so three fake instances on a laptop's few cores train side by
side as three GPUs would, and the wall measures lorarun's own work: renting side by side, boot, upload (once per
rental), engine start, pull, verify, destroy. Without pacing (S=0) the instances share the CPU and the ratio says
more about the CPU count than about lorarun.

S defaults to 60 s: the tiny jobs train 2 and 8 steps, so a job's training then outweighs its engine start-up
(python, torch, peft and diffusers imported, the model built: 15-35 s of CPU on a shared 2-core machine) roughly as
a real job's minutes of training outweigh its start-up. With a small S the per-job start-up, slowed by the three
instances sharing the CPU, is most of every job and the ratio measures that. The run takes about 20 minutes.

The batch plans with what lorarun measured on the baseline run (its calibration.jsonl, handed from the first test's
lorarun home to the second's), as a user's second batch on these machines would: the simulated GPU's step time then
sizes the jobs, so the packing gives the long job a rental of its own. (Before issue 19's calibration fix the plan
ignored it: the baseline ran on the cheapest GPU, whose measured pace made it look slower than the unmeasured ones,
and the batch was planned on those with the shipped table's guess.)

The tests assert what does not depend on the machine's speed; the ratio is only reported here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = (
    "tests/e2e/test_batch_rentals.py::test_longest_job_alone",
    "tests/e2e/test_batch_rentals.py::test_eight_jobs_over_three_rentals",
)
WALL_ENV = "LORARUN_BENCH_BATCH_WALL"  # the folder the tests write their measurements to
STEP_ENV = "LORARUN_BENCH_STEP_SECONDS"  # the simulated GPU step time the tests give the fake instances
TARGET = 1.3
DEFAULT_STEP_S = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-seconds", type=float, default=DEFAULT_STEP_S, help="simulated GPU step time S (0: off)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, WALL_ENV: tmp, STEP_ENV: str(args.step_seconds)}
        command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "--timeout=0", *TESTS]
        done = subprocess.run(command, cwd=ROOT, env=env)
        found = {name: Path(tmp) / f"{name}.json" for name in ("batch", "alone")}
        if done.returncode != 0 or not all(p.exists() for p in found.values()):
            print(f"the batch tests did not pass (exit {done.returncode}): nothing measured", file=sys.stderr)
            return 1
        batch, alone = (json.loads(found[n].read_text(encoding="utf-8")) for n in ("batch", "alone"))
    measured = summarise(batch, alone, args.step_seconds, load_before, os.getloadavg())
    print_report(measured, batch)
    if args.json:
        args.json.write_text(json.dumps({**measured, "batch": batch, "alone": alone}, indent=1), encoding="utf-8")
    return 0


def summarise(batch: dict, alone: dict, step_s: float, load_before, load_after) -> dict:
    turns = {name: job["turn_s"] for name, job in batch["jobs"].items()}
    longest_turn = max(turns, key=turns.get)
    paced = [j["pacing"] for j in (*batch["jobs"].values(), *alone["jobs"].values()) if j["pacing"]]
    busy = sum(p["busy_s"] for p in paced)
    steps = sum(p["steps"] for p in paced)
    return {
        "batch_wall_s": batch["wall_s"],
        "alone_wall_s": alone["wall_s"],
        "ratio": round(batch["wall_s"] / alone["wall_s"], 3),
        "target": TARGET,
        "step_seconds": step_s,
        "cpu_seconds_per_step": round(busy / steps, 3) if steps else None,
        "old_ratio": round(batch["wall_s"] / turns[longest_turn], 3),  # ÷ the longest job's turn in the batch
        "old_longest_job": longest_turn,
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }


def print_report(m: dict, batch: dict) -> None:
    pacing = (
        f"each step paced to ≥ {m['step_seconds']:g} s (a simulated GPU; the real CPU work was "
        f"{m['cpu_seconds_per_step']} s/step on average)"
        if m["step_seconds"] > 0
        else "unpaced: the fake instances share the CPU"
    )
    print(
        f"batch wall {m['batch_wall_s']:.1f} s (8 jobs, 3 rentals); the longest job alone "
        f"{m['alone_wall_s']:.1f} s (1 rental): ratio {m['ratio']:.2f} (target ≤ {m['target']})\n"
        f"  {pacing}; {m['cpus']} CPU(s), load average {m['load_before'][0]} before, {m['load_after'][0]} after\n"
        f"  older measure: batch wall ÷ the longest turn in the batch ({m['old_longest_job']}) = {m['old_ratio']:.2f}"
    )
    if batch.get("plan"):
        print(f"  lorarun's {batch['plan']}")
    for number, rental in batch["rentals"].items():
        print(f"  rental {number}: up at {rental['up_s']:.1f} s, ended at {rental['end_s']:.1f} s: ", end="")
        print(", ".join(f"{n} (trained {span(batch['jobs'][n]['training'])})" for n in rental["jobs"]))


def span(interval: list[float]) -> str:
    return f"{interval[0]:.1f}–{interval[1]:.1f} s"


if __name__ == "__main__":
    sys.exit(main())
