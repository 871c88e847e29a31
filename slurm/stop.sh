#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by slurm/start.sh DIR.
#
#   bash slurm/stop.sh DIR [--purge]
#
# Cancels all jobs (while slurmctld is up), then SIGTERMs slurmd, slurmctld, slurmdbd, mariadbd and munged by the
# PIDs recorded in DIR/pids/ (each checked against /proc/PID/comm, so a recycled PID is never signalled), SIGKILL
# after a timeout. Leftover slurmstepd of THIS cluster (SLURM_CONF=DIR/slurm.conf in their environment) and their
# job processes are stopped too. Zombies count as stopped. Idempotent. --purge also deletes DIR.
# It never signals a process it did not start (or that a daemon of this cluster did not start).
set -uo pipefail

SCRIPT=stop FLAG=--purge
# shellcheck source=slurm/_cli.sh
source "$(dirname "${BASH_SOURCE[0]}")/_cli.sh"
parse_dir_args "$@"
PURGE=$FLAG_ON
TERM_TIMEOUT=${SLURM_LOCAL_STOP_TIMEOUT:-30}

if [[ ! -d "$DIR" ]]; then
  say "$DIR does not exist; nothing to stop"
  exit 0
fi
[[ -e "$DIR/$MARKER" ]] || die "$DIR was not made by slurm/start.sh (no $MARKER); refusing to touch it"
export SLURM_CONF="$DIR/slurm.conf"

# state PID: prints the process state letter (R, S, Z, ...) or nothing if the process is gone
pstate() { awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null; }
alive() { local s; s=$(pstate "$1"); [[ -n "$s" && "$s" != Z && "$s" != X ]]; }
# pid_of NAME: recorded PID of daemon NAME if that process is alive and really is NAME
pid_of() {
  local name=$1 pid comm
  [[ -r "$DIR/pids/$name.pid" ]] || return 1
  pid=$(<"$DIR/pids/$name.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ "$comm" == "$name" ]] || return 1
  alive "$pid" || return 1
  echo "$pid"
}

# stop_pids TIMEOUT PID...: SIGTERM, wait up to TIMEOUT s, then SIGKILL. Zombies count as stopped.
stop_pids() {
  local timeout=$1; shift
  local p left end
  (( $# )) || return 0
  kill -TERM "$@" 2>/dev/null
  end=$(( $(date +%s) + timeout ))
  while :; do
    left=()
    for p in "$@"; do alive "$p" && left+=("$p"); done
    (( ${#left[@]} )) || return 0
    if (( $(date +%s) >= end )); then
      say "SIGKILL to ${left[*]} (still alive after ${timeout}s)"
      kill -KILL "${left[@]}" 2>/dev/null
      sleep 0.5
      return 0
    fi
    sleep 0.1
  done
}

# stop_daemons NAME...: stop the recorded daemons NAME... together
stop_daemons() {
  local name pid pids=() names=()
  for name in "$@"; do
    if pid=$(pid_of "$name"); then pids+=("$pid"); names+=("$name($pid)"); fi
  done
  if (( ${#pids[@]} )); then
    say "stopping ${names[*]}"
    stop_pids "$TERM_TIMEOUT" "${pids[@]}"
    STOPPED+=("${pids[@]}")
  fi
  for name in "$@"; do rm -f "$DIR/pids/$name.pid"; done
}

# descendants PID: all descendant PIDs of PID (children first listed after parents)
descendants() {
  local root=$1
  ps -e -o pid=,ppid= | awk -v root="$root" '
    { parent[$1] = $2; pids[NR] = $1 }
    END {
      want[root] = 1; changed = 1
      while (changed) { changed = 0
        for (i in pids) { p = pids[i]; if (!(p in want) && (parent[p] in want)) { want[p] = 1; changed = 1; print p } } }
    }'
}

# stepd_of_this_cluster: slurmstepd processes whose environment has SLURM_CONF=DIR/slurm.conf
stepd_of_this_cluster() {
  local f pid
  for f in /proc/[0-9]*/comm; do
    [[ "$(cat "$f" 2>/dev/null)" == slurmstepd ]] || continue
    pid=${f#/proc/}; pid=${pid%/comm}
    alive "$pid" || continue
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$DIR/slurm.conf"; then
      echo "$pid"
    fi
  done
}

any_up=0 STOPPED=()
for d in slurmd slurmctld slurmdbd mariadbd munged; do pid_of "$d" >/dev/null && any_up=1; done

# 1. cancel jobs while slurmctld is up
if pid_of slurmctld >/dev/null && command -v squeue >/dev/null; then
  jobs=$(timeout 10 squeue -h -o '%F' 2>/dev/null | sort -u | tr '\n' ' ')
  if [[ -n "${jobs// /}" ]]; then
    say "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null
    end=$(( $(date +%s) + 15 ))
    while [[ -n "$(timeout 5 squeue -h -o '%i' 2>/dev/null)" ]] && (( $(date +%s) < end )); do sleep 0.3; done
  fi
fi

# 2. the daemons, by recorded PID: the compute side first, the database side last
stop_daemons slurmd slurmctld
# 3. orphaned step daemons of this cluster (e.g. slurmctld/slurmd died with jobs running) and their job processes
steps=$(stepd_of_this_cluster)
if [[ -n "$steps" ]]; then
  for s in $steps; do
    kids=$(descendants "$s" | tr '\n' ' ')
    say "stopping leftover slurmstepd $s and its job processes: ${kids:-none}"
    # shellcheck disable=SC2086
    [[ -z "${kids// /}" ]] || stop_pids 5 $kids
    # slurmstepd ignores SIGTERM: it is ended with SIGKILL after its processes are gone
    alive "$s" && { kill -KILL "$s" 2>/dev/null; sleep 0.2; }
    STOPPED+=("$s")
  done
fi
stop_daemons slurmdbd
stop_daemons mariadbd
stop_daemons munged

# 4. give PID 1 a moment to reap the zombies of what was stopped (they no longer run)
end=$(( $(date +%s) + 5 ))
while (( $(date +%s) < end )); do
  z=0
  for p in "${STOPPED[@]}"; do [[ -e /proc/$p ]] && z=1; done
  (( z )) || break
  sleep 0.2
done
rm -f "$DIR"/run/*.pid "$DIR/run/munge.socket" "$DIR/run/mysqld.sock"

if (( any_up )); then say "stopped the cluster in $DIR"; else say "cluster in $DIR was not running"; fi

if (( PURGE )); then
  for d in slurmd slurmctld slurmdbd mariadbd munged; do
    pid_of "$d" >/dev/null && die "--purge refused: $d still running"
  done
  rm -rf -- "$DIR"
  say "deleted $DIR"
fi
exit 0
