"""Data-parallel launch: `lorarun-engine train` on a machine with several GPUs re-runs itself under
`accelerate launch --multi_gpu` (torch.distributed underneath), so the agent and the local provider start the engine
the same way everywhere. Inside a launched rank (LOCAL_RANK set) nothing is re-launched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def wanted_processes(requested: str, device: str) -> int:
    if "LOCAL_RANK" in os.environ or "RANK" in os.environ:
        return 1  # already one rank of a distributed launch
    if requested != "auto":
        return max(1, int(requested))
    if device == "cpu":
        return 1
    try:
        import torch
    except ImportError:
        return 1
    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def distributed_command(processes: int, engine_args: list[str]) -> list[str]:
    """The `accelerate launch` command for `processes` GPUs running the engine with `engine_args`.
    Mixed precision is not given here: the engine passes the job's choice to its Accelerator itself."""
    args = [a for i, a in enumerate(engine_args) if not _is_num_processes(engine_args, i)]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "lorarun.image.engine",
        *args,
        "--num-processes",
        "1",
    ]


def _is_num_processes(args: list[str], i: int) -> bool:
    return args[i].startswith("--num-processes") or (i > 0 and args[i - 1] == "--num-processes")


def run_distributed(command: list[str], output_dir: Path) -> int:
    """Run the launcher as a child and forward SIGTERM/SIGINT to it (it forwards them to every rank, which save
    and write `stopped`). The launcher itself exits non-zero when signalled; a stop the ranks completed is still
    a clean stop, so the exit code is 0 then, as for a single process."""
    child = subprocess.Popen(command)
    forwarded = []

    def forward(signum, frame):
        forwarded.append(signum)
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    last = _last_event(output_dir)
    if code != 0 and forwarded and last == "stopped":
        return 0
    if code != 0 and last not in ("failed", "stopped", "finished"):
        # a non-main rank died (its own error is in the log) and took the run down: the controller still gets
        # its one `failed` event
        from lorarun.image.engine.events import EventLog

        log = EventLog(output_dir)
        log.emit("failed", reason=f"a training process exited with code {code}; see the engine log")
        log.close()
    return code


def _last_event(output_dir: Path) -> str | None:
    try:
        lines = (output_dir / "events.jsonl").read_text(encoding="utf-8").strip().splitlines()
        return json.loads(lines[-1])["event"] if lines else None
    except (OSError, ValueError, KeyError):
        return None
