#!/usr/bin/env bash
# Every measured table of BENCHMARKS.md, MONITORING.md and OPTIMIZATION.md, one after the other on a quiet
# machine (nothing else running: the timings are only comparable within one session). About 2.5 hours on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p benchmarks/results
step() { local name=$1; shift; echo "== $(date -u +%H:%M:%S) $name: $*"; "$@" > "benchmarks/results/$name.log" 2>&1 || echo "   FAILED: see benchmarks/results/$name.log"; }
step latency $PY benchmarks/latency.py
step holdout $PY benchmarks/holdout.py
step scale $PY benchmarks/scale.py --items 1000 5000 20000
step compare $PY benchmarks/compare.py --all
step monitoring $PY benchmarks/monitoring.py --reference-n 600 --extra-reference 3000 --pool 3000 --batches 100 --batch-size 200 --more-sizes 300
step optimization $PY -m optimization benchmark --timing-only
echo "== $(date -u +%H:%M:%S) done"
