#!/usr/bin/env bash
# Smoke test of the running local cluster (slurm/start.sh DIR): sbatch, a 6-task array, sacct, a fake-GPU job,
# submitit map_array and a submitit Checkpointable job requeued by USR2.
#
#   bash slurm/smoke.sh DIR
#
# Prints one PASS/FAIL line per check and ends with "N passed, M failed"; exits non-zero if any check failed.
# Python: $SMOKE_PYTHON, else the repo's .venv/bin/python, else python3 (needs submitit).
set -uo pipefail

[[ $# -eq 1 && "$1" != -* ]] || { echo "usage: bash slurm/smoke.sh DIR" >&2; exit 2; }
DIR=$(realpath -m -- "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
[[ -f "$DIR/env.sh" ]] || { echo "smoke.sh: $DIR/env.sh missing; run: bash $HERE/start.sh $DIR" >&2; exit 2; }
# shellcheck disable=SC1091
source "$DIR/env.sh"
timeout 10 scontrol ping >/dev/null 2>&1 || { echo "smoke.sh: slurmctld of $DIR is not up; run: bash $HERE/start.sh $DIR" >&2; exit 2; }

PY=${SMOKE_PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x "$HERE/../.venv/bin/python" ]]; then PY="$(cd "$HERE/.." && pwd)/.venv/bin/python"; else PY=$(command -v python3); fi
fi
W="$DIR/smoke/$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$W"
cd "$W" || exit 2
T0=$EPOCHREALTIME
now() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}'; }
PASSED=0 FAILED=0
pass() { echo "PASS $* [$(now)s]"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $* [$(now)s]"; FAILED=$((FAILED + 1)); }

# 1. a plain batch job
t=$EPOCHREALTIME
plain=$(timeout 120 sbatch --parsable --wait -J smoke-plain -o "$W/plain-%j.out" \
          --wrap 'echo "hello from job $SLURM_JOB_ID on $(hostname)"' 2>"$W/plain.err")
rc=$?
dt=$(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
if [[ $rc == 0 ]] && grep -q "hello from job $plain" "$W/plain-$plain.out" 2>/dev/null; then
  pass "sbatch: job $plain wrote '$(head -n 1 "$W/plain-$plain.out")' (${dt}s)"
else
  fail "sbatch: rc=$rc job='$plain' $(cat "$W/plain.err" 2>/dev/null | tail -n 2)"
fi

# 2. a 6-task array (in chunks if MaxArraySize is small: indices must stay below MaxArraySize)
max_array=$(scontrol show config | awk '$1 == "MaxArraySize" {print $3}')
chunk=$(( max_array < 6 ? max_array : 6 ))
array_ids=() off=0 rc=0
t=$EPOCHREALTIME
while (( off < 6 )); do
  n=$(( 6 - off < chunk ? 6 - off : chunk ))
  id=$(SMOKE_OFF=$off timeout 120 sbatch --parsable --wait -J smoke-array --array=0-$((n - 1)) \
         -o "$W/array-%A_%a.out" --wrap 'echo "task $((SMOKE_OFF + SLURM_ARRAY_TASK_ID)) of $SLURM_ARRAY_JOB_ID"' \
         2>>"$W/array.err") || rc=$?
  array_ids+=("$id")
  off=$((off + n))
done
dt=$(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
got=$(cat "$W"/array-*.out 2>/dev/null | awk '{print $2}' | sort -n | tr '\n' ' ')
if [[ $rc == 0 && "$got" == "0 1 2 3 4 5 " ]]; then
  pass "array: 6 tasks in ${#array_ids[@]} array job(s) ${array_ids[*]} (MaxArraySize=$max_array, ${dt}s)"
else
  fail "array: rc=$rc tasks seen '$got' jobs ${array_ids[*]} $(tail -n 2 "$W/array.err" 2>/dev/null)"
fi

# 3. sacct knows them all as COMPLETED (it lags ~1 s behind slurmctld, so retry)
ids=$(IFS=,; echo "$plain,${array_ids[*]}")
end=$(( $(date +%s) + 20 ))
while :; do
  states=$(sacct -n -X -P -j "$ids" -o JobID,State 2>&1)
  n_done=$(grep -c '|COMPLETED$' <<<"$states")
  n_all=$(grep -c '|' <<<"$states")
  (( n_done == 7 && n_all == 7 )) && break
  (( $(date +%s) >= end )) && break
  sleep 0.5
done
if (( n_done == 7 && n_all == 7 )); then
  pass "sacct: 7/7 COMPLETED ($(cut -d'|' -f1 <<<"$states" | tr '\n' ' '))"
else
  fail "sacct: $n_done of $n_all COMPLETED (want 7): $(tr '\n' ' ' <<<"$states")"
fi

# 4. a GPU job sees CUDA_VISIBLE_DEVICES (fake GPUs through GRES)
gpus=$(scontrol show node | grep -o 'Gres=gpu:[0-9]*' | head -n 1 | cut -d: -f2)
t=$EPOCHREALTIME
if (( ${gpus:-0} > 0 )); then
  gid=$(timeout 120 sbatch --parsable --wait -J smoke-gpu --gpus-per-node=1 -o "$W/gpu-%j.out" \
          --wrap 'echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"' 2>"$W/gpu.err")
  rc=$?
  line=$(head -n 1 "$W/gpu-$gid.out" 2>/dev/null)
  dt=$(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
  if [[ $rc == 0 && "$line" =~ ^CUDA_VISIBLE_DEVICES=[0-9]+$ ]]; then
    pass "gpu: --gpus-per-node=1 job $gid saw $line (${dt}s)"
  else
    fail "gpu: rc=$rc job='$gid' saw '$line' $(tail -n 2 "$W/gpu.err" 2>/dev/null)"
  fi
else
  if timeout 30 sbatch --parsable -J smoke-gpu --gpus-per-node=1 --wrap true >/dev/null 2>"$W/gpu.err"; then
    fail "gpu: no GPUs configured (SLURM_LOCAL_GPUS=0) but a --gpus-per-node=1 job was accepted"
  else
    pass "gpu: no GPUs configured; --gpus-per-node=1 is rejected: $(head -n 1 "$W/gpu.err")"
  fi
fi

# 5-6. submitit: map_array of 4, and a Checkpointable job requeued by `scancel --signal=USR2`
partition=$(sinfo -h -o '%P' | head -n 1 | tr -d '*')
if ! "$PY" -c 'import submitit' 2>/dev/null; then
  fail "submitit map_array: $PY cannot import submitit"
  fail "submitit Checkpointable requeue: $PY cannot import submitit"
else
  out=$(PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" timeout 300 "$PY" -c \
        'import sys, smoke_submitit; sys.exit(smoke_submitit.main(sys.argv[1], sys.argv[2]))' \
        "$W/submitit" "$partition" 2>"$W/submitit.err")
  rc=$?
  n=0
  while IFS= read -r line; do
    case "$line" in
      "PASS "*) pass "${line#PASS }"; n=$((n + 1)) ;;
      "FAIL "*) fail "${line#FAIL }"; n=$((n + 1)) ;;
    esac
  done <<<"$out"
  if (( n < 2 )); then
    fail "submitit: only $n of 2 checks reported (rc=$rc): $(tail -n 3 "$W/submitit.err" | tr '\n' ' ')"
  fi
fi

echo "work dir: $W"
echo "$PASSED passed, $FAILED failed"
(( FAILED == 0 ))
