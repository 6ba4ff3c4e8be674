"""A stand-in for `python -m lorarun.image.engine train`, for the agent's tests (stdlib only, starts fast).

It keeps the engine's contract with the agent: JSON-line events appended to `<output_dir>/events.jsonl`, and on
SIGTERM it saves a "checkpoint", writes `stopped` and exits 0.

    fake_engine.py --output-dir D --mode finish|fail|hang|sample [--ignore-term] [--env-report FILE]

`sample`: reports its last training step at once, then "renders samples" until the file `release` appears in
the output folder (SIGTERM: stopped), then saves the final LoRA and reports `finished`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def emit(output_dir: Path, event: str, **fields) -> None:
    line = json.dumps({"t": time.time(), "event": event, **fields}) + "\n"
    fd = os.open(output_dir / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--mode", choices=("finish", "fail", "hang", "sample"), required=True)
    parser.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM (to test the SIGKILL fallback)")
    parser.add_argument("--env-report", type=Path, help="write the names of the environment variables here")
    args = parser.parse_args()
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)

    stop = []
    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_term else (lambda *_: stop.append(True)))
    if args.env_report:
        args.env_report.write_text(json.dumps(sorted(os.environ)))
    print("fake engine: started", flush=True)
    emit(out, "started", pid=os.getpid())  # written after the handler is in place: tests wait for it

    if args.mode == "fail":
        emit(out, "failed", error="RuntimeError: CUDA out of memory (fake)")
        print("fake engine: failing", file=sys.stderr, flush=True)
        return 3
    if args.mode == "finish":
        for step in (1, 2):
            emit(out, "step", step=step, total_steps=2, loss=0.5 / step, lr=1e-4, it_s=3.0)
        (out / "lora.safetensors").write_bytes(b"final")
        emit(out, "finished", path="lora.safetensors")
        return 0
    if args.mode == "sample":
        emit(out, "step", step=2, total_steps=2, loss=0.25, lr=1e-4, it_s=3.0)
        while not stop and not (out / "release").exists():
            time.sleep(0.01)
        if not stop:
            (out / "lora.safetensors").write_bytes(b"final")
            emit(out, "finished", path="lora.safetensors")
            return 0
    while not stop:
        time.sleep(0.01)
    (out / "last.safetensors").write_bytes(b"checkpoint")
    emit(out, "checkpoint", path="last.safetensors")
    emit(out, "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
