"""`python -m lorarun.image.engine train --config engine_config.json` (console script `lorarun-engine`).

parse → validate → train(cfg). Exit codes: 0 finished or stopped, 2 config error (one line on stderr and a `failed`
event), 1 training failure. `prepare-assets` writes the tokenizer/config folders (the Docker image bakes them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lorarun.image.engine_config import EngineConfig
from lorarun.image.schema import ConfigError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lorarun-engine", description="Train a Stable Diffusion LoRA.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train from an engine config written by the controller")
    train.add_argument("--config", required=True, type=Path, help="engine_config.json")
    train.add_argument(
        "--step-event-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="at most one step event per this many seconds (0 = every optimizer step)",
    )
    train.add_argument(
        "--num-processes",
        default="auto",
        help="data-parallel processes; auto = one per visible GPU (through accelerate launch)",
    )
    assets = sub.add_parser("prepare-assets", help="write tokenizer and model-config folders into the asset cache")
    assets.add_argument("--dir", type=Path, default=None, help="default: $LORARUN_ASSET_CACHE or ~/.cache/lorarun")
    return parser.parse_args(argv)


def _fail_config(path: Path, message: str) -> int:
    """A config that does not parse still gets its `failed` event, if the output_dir can be read from it."""
    try:
        output_dir = json.loads(path.read_text(encoding="utf-8"))["output_dir"]
        from lorarun.image.engine.events import EventLog, one_line

        log = EventLog(Path(output_dir))
        log.emit("failed", reason=one_line(message))
        log.close()
    except Exception:
        pass
    print(f"lorarun-engine: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "prepare-assets":
        from lorarun.image.engine.assets import prepare_all

        for folder in prepare_all(args.dir):
            print(folder)
        return 0
    try:
        cfg = EngineConfig.read(args.config)
    except ConfigError as exc:
        return _fail_config(args.config, str(exc).splitlines()[0])
    except (OSError, ValueError) as exc:
        return _fail_config(args.config, f"cannot read {args.config}: {exc}".splitlines()[0])
    from lorarun.image.engine.launch import distributed_command, wanted_processes

    processes = wanted_processes(args.num_processes, cfg.device)
    if processes > 1:
        from lorarun.image.engine.launch import run_distributed

        return run_distributed(
            distributed_command(processes, argv if argv is not None else sys.argv[1:]), Path(cfg.output_dir)
        )
    from lorarun.image.engine.train import train

    return train(cfg, step_event_interval_s=args.step_event_interval)


def exit_now(code: int) -> None:
    """End the process once `main` has returned: everything the engine writes (events, LoRA files, resume state) is
    closed by then. The interpreter's own teardown of torch, diffusers, transformers and peft module state takes
    1.5-2.5 s on a CPU (measured: an engine that only imports them exits in 0.02 s this way), time a rental is
    billed for and every engine test waits through. The exit handlers still run (logging flushes, torch's library
    cleanup); with a thread of ours still working, the normal exit joins it instead."""
    import atexit
    import os
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
