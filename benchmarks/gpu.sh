#!/usr/bin/env bash
# The GPU benchmark in one command (issue 19, item 7), at most 8 minutes on one GPU:
#   benchmarks/gpu.sh [OUT_DIR] [--n CARDS]      (default OUT_DIR benchmarks/results/gpu, 24 cards)
# EasyOCR, RapidOCR (ONNX Runtime CUDA) and the orientation CNN on CPU against CUDA in images per second;
# two EasyOCR actors with num_gpus 0.5 sharing the device; `raypipe run` of the quick spec on the GPU.
# Results: OUT_DIR/gpu.json and OUT_DIR/gpu.md. Without CUDA it says so, measures the CPU side and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export OMP_THREAD_LIMIT=${OMP_THREAD_LIMIT:-1} TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0
export ORT_DISABLE_TELEMETRY=1 RAY_USAGE_STATS_ENABLED=0
# The Python side skips what would start after its 420 s budget; this stops anything stuck past 8 minutes.
exec timeout --kill-after=10 480 "$PYTHON" -m benchmarks.gpu "$@"
