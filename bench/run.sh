#!/usr/bin/env bash
# The whole benchmark suite on a fresh machine: bench/.venv (gitignored) with this project and,
# for the side-by-side only, rlms==0.1.3 from PyPI; then every script; then bench/out/results.json
# and the table. Sizes: BENCH_QUICK=1 skips the 100M-token scale runs (400 MB contexts).
# BASELINE_REV=<git rev> adds the LMClient of that revision to the sub-call figures (before/after).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x bench/.venv/bin/python ] || "$PY" -m venv bench/.venv
bench/.venv/bin/pip install -q -e . "rlms==0.1.3"
B=bench/.venv/bin/python
mkdir -p bench/out
base=()
[ -n "${BASELINE_REV:-}" ] && base=(--baseline "$BASELINE_REV")
"$B" bench/subcalls.py --n 64 256 1000 --c 8 32 64 --latency 0.1 0.25 "${base[@]}"
"$B" bench/side_by_side.py --n 256 --latency 0.25 --ours-c 64
"$B" bench/overhead.py
"$B" bench/step_slope.py
if [ -n "${BENCH_QUICK:-}" ]; then
  "$B" bench/scale.py --tokens 1e6 1e7
else
  "$B" bench/scale.py --tokens 1e6 1e7 1e8
fi
"$B" bench/report.py
