#!/usr/bin/env bash
# The prepared GPU run of issue #13 (bench/RESULTS.md says how to call it through the device tool).
# The H200 image has torch, peft, transformers, accelerate, safetensors but not diffusers: carry its wheel in .whl/
# (`pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl diffusers==0.42.1`).
# Stage "sd15": SD1.5 @512 bs 1/4/8 (+ the engine's plain step), same math, auto batch, the reference job.
# Stage "sdxl": SDXL @1024 bs 1/4, same math. Stage "levers": each lever off in turn, SD1.5 @512 bs 8.
# Each stage fits one 10-minute call; inductor's cache makes the second compile of a graph in a call fast.
set -euo pipefail
stage=${1:-sd15}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . >/dev/null
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 OUT=${OUT:-.}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
case "$stage" in
  sd15) python3 bench/engine_throughput.py --models sd15 --with-engine-plain --reference-plain 2>&1 | tee "$OUT/sd15.log" ;;
  sdxl) python3 bench/engine_throughput.py --models sdxl --no-reference 2>&1 | tee "$OUT/sdxl.log" ;;
  levers) python3 bench/engine_throughput.py --models sd15 --batches 8 --levers --no-same-math --no-reference \
            2>&1 | tee "$OUT/levers.log" ;;
  *) echo "usage: bench/gpu_run.sh sd15|sdxl|levers" >&2; exit 2 ;;
esac
