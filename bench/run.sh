#!/usr/bin/env bash
# The whole benchmark suite on a fresh machine, then bench/out/results.json and the tables.
#
# Environments (gitignored): bench/.venv holds this project (editable), psutil and the peer
# rlms==0.1.3; bench/.venv-dspy holds dspy (3.x) and deno from PyPI, kept apart so dspy's
# dependencies never change what the rlms and rlm-kernel rows run on. dspy's Pyodide comes from the
# npm registry through Deno's npm: specifier (cached in DENO_DIR on the first run).
#
# Sizes: BENCH_QUICK=1 runs each figure once (no repeats), replays 1k and 2k only with a 120 s
# bound, and skips the 100M-token scale runs (400 MB contexts).
# BASELINE_REV=<git rev> adds the LMClient of that revision to the REPL-level sub-call rows.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x bench/.venv/bin/python ] || "$PY" -m venv bench/.venv
bench/.venv/bin/pip install -q -e . "rlms==0.1.3" psutil
[ -x bench/.venv-dspy/bin/python ] || "$PY" -m venv bench/.venv-dspy
bench/.venv-dspy/bin/pip install -q "dspy>=3,<4" deno
RUNNER="$(bench/.venv-dspy/bin/python -c 'import dspy.primitives as p, os; print(os.path.join(os.path.dirname(p.__file__), "runner.js"))')"
DENO_NO_PACKAGE_JSON=1 bench/.venv-dspy/bin/deno cache --no-config --no-lock --node-modules-dir=false \
  --import-map=bench/dspy_runtime/import_map.json "$RUNNER"
export BENCH_DSPY_PYTHON="$PWD/bench/.venv-dspy/bin/python"
B=bench/.venv/bin/python
mkdir -p bench/out
rm -f bench/out/*.json
if [ -n "${BENCH_QUICK:-}" ]; then R=1; else R=3; fi
base=()
[ -n "${BASELINE_REV:-}" ] && base=(--baseline "$BASELINE_REV")
# Issue 13's table: one script per figure.
"$B" bench/phase.py --n 1000 --c 64 --latency 0.25 --repeat "$R"      # 1 (+ dspy)
"$B" bench/cpu.py --n 1000 --c 64 --repeat "$R"                       # 2
"$B" bench/step_slope.py --steps 20 --repeat "$R"                     # 3
"$B" bench/startup.py --repeat "$([ "$R" = 1 ] && echo 3 || echo 5)"  # 4
"$B" bench/big_batch.py --n 5000 --c 256 --latency 0.05 --repeat 1    # 5
if [ -n "${BENCH_QUICK:-}" ]; then                                    # 6
  "$B" bench/replay.py --sizes 1000 2000 --timeout 120 --make-timeout 300
else
  "$B" bench/replay.py --sizes 1000 2000 10000 --timeout 300 --make-timeout 600
fi
"$B" bench/side_by_side.py --n 256 --latency 0.25 --c 64 --repeat "$R"  # 7 (+ dspy)
# The other benches.
"$B" bench/subcalls.py --n 64 256 1000 --c 8 32 64 --latency 0.1 0.25 "${base[@]}"
"$B" bench/overhead.py
if [ -n "${BENCH_QUICK:-}" ]; then
  "$B" bench/scale.py --tokens 1e6 1e7
else
  "$B" bench/scale.py --tokens 1e6 1e7 1e8
fi
"$B" bench/report.py
