#!/usr/bin/env bash
# One GPU benchmark suite: every GPU benchmark the project has, in at most 8 minutes, each
# result table and log under $OUT with a description of the machine (machine.txt).
#
#   OUT=/some/dir bash bench/gpu_suite.sh            # on a machine with a CUDA GPU
#   OUT=/some/dir bash bench/gpu_suite.sh --cpu-smoke  # small sizes on CPU torch: proves it runs
#
# Each benchmark runs under its own time limit (the limits add up to < 8 minutes); one that
# fails or runs out of time is reported as such in summary.md and the suite goes on.
# LIMIT_SCALE=3 multiplies every limit (a shared, busy machine: the smoke run's benchmarks are
# slow there, not broken; the limits are sized for a quiet one).
# Needs the assets (ONEPIXEL_ASSETS, or the user cache) and the venv of `make test`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu-suite}
PY=${PYTHON:-.venv/bin/python}
MODE=gpu
[ "${1:-}" = "--cpu-smoke" ] && MODE=cpu
mkdir -p "$OUT"

{
  echo "mode: $MODE"
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  uname -a
  echo "CPUs: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  echo "memory: $(grep MemTotal /proc/meminfo | awk '{print $2/1048576 " GiB"}')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch, onnxruntime as ort; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print('onnxruntime', ort.__version__, ort.get_available_providers())"
} > "$OUT/machine.txt" 2>&1

echo "# GPU benchmark suite ($MODE)" > "$OUT/summary.md"
echo >> "$OUT/summary.md"
echo "| benchmark | limit s | seconds | result |" >> "$OUT/summary.md"
echo "|---|---:|---:|---|" >> "$OUT/summary.md"

run() {  # run NAME LIMIT_S SCRIPT ARGS...
  local name=$1 limit=$(( $2 * ${LIMIT_SCALE:-1} )); shift 2
  local t0=$(date +%s)
  timeout --signal=INT --kill-after=10 "$limit" "$PY" "$@" --out "$OUT/$name.md" > "$OUT/$name.log" 2>&1
  local rc=$? t=$(( $(date +%s) - t0 ))
  local what=ok
  [ $rc -eq 124 ] && what="ran out of time (partial log)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && what="failed (rc $rc, see $name.log)"
  echo "| $name | $limit | $t | $what |" >> "$OUT/summary.md"
  echo "$name: $what in ${t}s"
}

if [ "$MODE" = gpu ]; then
  # model throughput per dtype and engine
  run predict 60 bench/bench_predict.py --device cuda --seconds 3
  # attack campaign: attacks/s and evaluations/s against scipy
  run attack 120 bench/bench_attack.py --device cuda --images 256 --scipy-images 8
  # the papers' full confidence map (step 5, 575,930,368 evaluations), fast path
  run confmap 180 bench/bench_confmap.py --device cuda --paper --repeat 1
  # scale-out: local executor against Ray actors sharing the GPU
  run scaleout 90 bench/bench_scaleout.py --device cuda --copies 4 --popsize 200 --maxiter 20 \
      --gpus-per-worker 0.5 --workers 1,2
else
  run predict 60 bench/bench_predict.py --device cpu --seconds 0.5 --batch 64 --small-batch 8
  run attack 150 bench/bench_attack.py --device cpu --images 8 --scipy-images 1 --modes immediate \
      --evaluators full
  run confmap 120 bench/bench_confmap.py --device cpu --pixels 8 --step 255 --repeat 1 --skip-bf16
  run scaleout 120 bench/bench_scaleout.py --device cpu --copies 1 --popsize 20 --maxiter 4
fi
cat "$OUT/summary.md"
