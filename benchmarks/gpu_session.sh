#!/usr/bin/env bash
# One GPU session, prepared to fit a short lease (~9 minutes on one H200): the wheels a GPU node lacks (carried in
# .whl/, see README "GPU runs"), then the GPU check — every method × protocol in bf16, fp16, fp32 and bf16 with CUDA
# graphs, four processes at once — then benchmarks/gpu_speed.py part by part. Each part has its own timeout and
# log under $OUT (default gpu-logs/), so a part that runs long costs only itself.
#   bash benchmarks/gpu_session.sh                      # on the GPU node, from the repository root
set -u
OUT=${OUT:-gpu-logs}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 BENCH_CACHE=/tmp/bench-cache
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
stamp() { echo "$(date +%T) $*" | tee -a "$OUT/session.log"; }
stamp "start: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"
$PY -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)" >>"$OUT/session.log" 2>&1
stamp "gpu check (4 processes)"
for run in "bf16" "fp16" "fp32" "bf16 graphs"; do
  set -- $run
  name=check-$1${2:+-graphs}
  extra=${2:+--set cuda_graphs=true --set epochs=6 --set iters_per_shot=6}   # enough steps to capture
  timeout "${CHECK_S:-170}" $PY benchmarks/gpu_check.py --precisions "$1" --no-throughput $extra \
    --workdir "/tmp/$name" >"$OUT/$name.log" 2>&1 &
done
wait
grep -rh --include=log.txt "cuda_graphs" /tmp/check-bf16-graphs/results-*/runs 2>/dev/null | sed 's/^[0-9-]* [0-9:,]* //' \
  | sort | uniq -c | sed 's/^/graphs capture: /' >>"$OUT/session.log"
stamp "gpu check done: $(grep -h 'failed cell' "$OUT"/check-*.log | tr '\n' ' ')"
timeout "${STEPS_S:-120}" $PY benchmarks/gpu_speed.py --parts steps >"$OUT/speed-steps.log" 2>&1
stamp "steps done ($?)"
timeout "${CELLS_S:-80}" $PY benchmarks/gpu_speed.py --parts cells --work /tmp/gpu-speed >"$OUT/speed-cells.log" 2>&1
stamp "cells done ($?)"
timeout "${SWEEP_S:-200}" $PY benchmarks/gpu_speed.py --parts sweep --work /tmp/gpu-speed >"$OUT/speed-sweep.log" 2>&1
stamp "sweep done ($?)"
