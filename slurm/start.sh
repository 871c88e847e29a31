#!/usr/bin/env bash
# Start (or make sure is running) a single-node SLURM cluster on localhost, for development and CI.
#
#   bash slurm/start.sh DIR [--fresh]
#
# Idempotent: installs the Debian packages if missing, writes the config into DIR, and starts whichever of
# munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd is not running yet (foreground daemons under setsid, PIDs in
# DIR/pids/). --fresh first wipes job state, spool, logs and the accounting database (refused while daemons run).
# Stop with: bash slurm/stop.sh DIR [--purge].  See slurm/README.md for the knobs (SLURM_LOCAL_*).
set -euo pipefail

SCRIPT=start FLAG=--fresh
# shellcheck source=slurm/_cli.sh
source "$(dirname "${BASH_SOURCE[0]}")/_cli.sh"
parse_dir_args "$@"
FRESH=$FLAG_ON
[[ "$(id -u)" == 0 ]] || die "must run as root (daemons run as root, packages are installed with apt-get)"
[[ "$DIR" =~ ^/[A-Za-z0-9._/+-]+$ ]] || die "DIR '$DIR' may only contain letters, digits and ._+-/ (slurm.conf has no quoting)"
(( ${#DIR} <= 80 )) || die "DIR '$DIR' is too long (${#DIR} > 80 chars; UNIX socket paths are limited to 108 bytes)"

# ---- knobs ----------------------------------------------------------------------------------------------------
CPUS=${SLURM_LOCAL_CPUS:-$(nproc)}
GPUS=${SLURM_LOCAL_GPUS:-1}
MEM_TOTAL_MB=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
MEM_MB=${SLURM_LOCAL_MEM_MB:-$(( MEM_TOTAL_MB * 95 / 100 ))}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
CLUSTER=${SLURM_LOCAL_CLUSTER:-local}
PORT=${SLURM_LOCAL_PORT_BASE:-6817}
MAX_ARRAY=${SLURM_LOCAL_MAX_ARRAY_SIZE:-1001}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
for v in CPUS GPUS MEM_MB PORT MAX_ARRAY TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
(( CPUS >= 1 )) || die "SLURM_LOCAL_CPUS must be >= 1"
(( MAX_ARRAY >= 1 )) || die "SLURM_LOCAL_MAX_ARRAY_SIZE must be >= 1"
[[ "$CLUSTER" =~ ^[a-z][a-z0-9_]*$ ]] || die "SLURM_LOCAL_CLUSTER must be lower-case letters/digits/_ (got '$CLUSTER')"
[[ "$PARTITION" =~ ^[A-Za-z][A-Za-z0-9_-]*$ ]] || die "bad SLURM_LOCAL_PARTITION '$PARTITION'"
CTLD_PORT=$PORT SLURMD_PORT=$((PORT + 1)) DBD_PORT=$((PORT + 2)) DB_PORT=$((PORT + 3))
NODE=$(hostname -s)
DEF_MEM=$(( MEM_MB / CPUS )); (( DEF_MEM >= 1 )) || DEF_MEM=1
MAX_JOBS=$(( MAX_ARRAY > 5000 ? MAX_ARRAY * 2 : 10000 ))
DB_PASS=bench-local-slurm   # fixed password of a MariaDB that only listens on 127.0.0.1 of this machine
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

export SLURM_CONF="$DIR/slurm.conf"

# ---- helpers --------------------------------------------------------------------------------------------------
# pid_of NAME: prints the recorded PID of daemon NAME if that process is alive (not a zombie) and is really NAME.
pid_of() {
  local name=$1 pid comm state
  [[ -r "$DIR/pids/$name.pid" ]] || return 1
  pid=$(<"$DIR/pids/$name.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ "$comm" == "$name" ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ "$state" != Z && "$state" != X ]] || return 1
  echo "$pid"
}
running() { pid_of "$1" >/dev/null; }

# launch NAME CMD...: start CMD detached in its own session; it must exec into a process named NAME.
launch() {
  local name=$1; shift
  local out="$DIR/log/$name.stdout"
  # a subshell (never a process-group leader, so setsid execs in place and $! is the daemon's PID) that first
  # closes every inherited descriptor above 2, so no daemon holds a pipe of whoever ran this script
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if (( fd > 2 )); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid "$@" </dev/null >>"$out" 2>&1
  ) &
  local pid=$!
  echo "$pid" >"$DIR/pids/$name.pid"
  local i comm
  for i in $(seq 50); do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ "$comm" == "$name" ]] && break
    sleep 0.05
  done
  if [[ "$comm" != "$name" ]]; then
    rm -f "$DIR/pids/$name.pid"
    echo "--- $out:" >&2; tail -n 20 "$out" >&2 || true
    die "$name did not start (pid $pid is '${comm:-gone}')"
  fi
  say "started $name (pid $pid)"
}

# wait_for WHAT LOG CMD...: retry CMD until it succeeds, TIMEOUT seconds at most.
wait_for() {
  local what=$1 log=$2; shift 2
  local end=$(( $(date +%s) + TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= end )); then
      echo "--- last lines of $log:" >&2; tail -n 25 "$log" >&2 2>/dev/null || true
      die "timed out after ${TIMEOUT}s waiting for $what"
    fi
    sleep 0.2
  done
}

# ---- 1. packages ----------------------------------------------------------------------------------------------
PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  say "installing ${missing[*]} (apt-get)"
  POLICY=/usr/sbin/policy-rc.d ADDED_POLICY=0
  if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\n# added by bench slurm/start.sh for the duration of apt-get install\nexit 101\n' >$POLICY
    chmod 755 $POLICY; ADDED_POLICY=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/tmp/bench-slurm-apt.log 2>&1 || { tail -n 20 /tmp/bench-slurm-apt.log >&2; die "apt-get update failed"; }
  apt-get install -y -q -o DPkg::Lock::Timeout=120 --no-install-recommends "${missing[@]}" >>/tmp/bench-slurm-apt.log 2>&1 \
    || { tail -n 30 /tmp/bench-slurm-apt.log >&2; die "apt-get install failed (log: /tmp/bench-slurm-apt.log)"; }
  if (( ADDED_POLICY )); then rm -f $POLICY; trap - EXIT; fi
  say "installed"
fi
for b in munged mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd sbatch sacctmgr scontrol; do
  command -v "$b" >/dev/null || die "$b not found after installation"
done

# ---- 2. directory, --fresh ------------------------------------------------------------------------------------
if [[ -e "$DIR" ]]; then
  [[ -d "$DIR" ]] || die "$DIR exists and is not a directory"
  if [[ ! -e "$DIR/$MARKER" ]] && [[ -n "$(ls -A "$DIR")" ]]; then
    die "$DIR is not empty and was not made by this script (no $MARKER); choose another DIR"
  fi
fi
mkdir -p "$DIR"
touch "$DIR/$MARKER"

if (( FRESH )); then
  up=()
  for d in "${DAEMONS[@]}"; do running "$d" && up+=("$d"); done
  (( ${#up[@]} == 0 )) || die "--fresh refused: ${up[*]} still running; run: bash slurm/stop.sh $DIR"
  say "--fresh: wiping state, spool, logs and database in $DIR"
  rm -rf "${DIR:?}/state" "${DIR:?}/spool" "${DIR:?}/log" "${DIR:?}/mysql" "${DIR:?}/run" "${DIR:?}/pids"
fi
mkdir -p "$DIR"/{state,spool,log,run,pids,munge,fakegpu}
chmod 755 "$DIR" "$DIR/run" "$DIR/log"
chmod 700 "$DIR/munge" "$DIR/state"

# ---- 3. config ------------------------------------------------------------------------------------------------
GRES_NODE="" GRES_LINE=""
if (( GPUS > 0 )); then
  GRES_NODE=" Gres=gpu:$GPUS"
  GRES_LINE="NodeName=$NODE Name=gpu File=$DIR/fakegpu/nvidia[0-$((GPUS - 1))]"
fi

new_slurm_conf() {
cat <<EOF
# generated by bench slurm/start.sh -- single-node cluster on localhost; edits are overwritten
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job is held before it may start again (default 120 s)
AuthInfo=socket=$DIR/run/munge.socket,cred_expire=10
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroups here: processes are tracked via /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
# slurmd trusts the node description below (CPUs may exceed the real cores; memory never drains the node)
SlurmdParameters=config_overrides
MaxArraySize=$MAX_ARRAY
MaxJobCount=$MAX_JOBS
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# for connections to slurmdbd the munge socket is taken from AccountingStoragePass, not from AuthInfo
AccountingStoragePass=$DIR/run/munge.socket
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM_MB$GRES_NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}
new_gres_conf() {
  echo "# generated by bench slurm/start.sh; the GPUs are fake (character devices 1,3 = /dev/null clones)"
  [[ -z "$GRES_LINE" ]] || echo "$GRES_LINE"
}
new_dbd_conf() {
cat <<EOF
# generated by bench slurm/start.sh
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
}
# install_conf FILE DAEMONS...: (re)write FILE; if its content changes while one of DAEMONS runs, refuse.
install_conf() {
  local file=$1 gen=$2; shift 2
  local tmp="$file.new.$$"
  $gen >"$tmp"
  if [[ -f "$file" ]] && ! cmp -s "$tmp" "$file"; then
    local d
    for d in "$@"; do
      if running "$d"; then
        rm -f "$tmp"
        echo "--- settings differ from the running cluster:" >&2
        diff <($gen) "$file" >&2 || true
        die "$(basename "$file") would change while $d runs; run 'bash slurm/stop.sh $DIR' first"
      fi
    done
  fi
  mv -f "$tmp" "$file"
}
install_conf "$DIR/slurm.conf" new_slurm_conf slurmctld slurmd slurmdbd
install_conf "$DIR/gres.conf" new_gres_conf slurmctld slurmd
install_conf "$DIR/slurmdbd.conf" new_dbd_conf slurmdbd
chmod 644 "$DIR/slurm.conf" "$DIR/gres.conf"
chmod 600 "$DIR/slurmdbd.conf"
cat >"$DIR/env.sh" <<EOF
# source this file to use the local SLURM cluster in $DIR
export SLURM_CONF=$DIR/slurm.conf
export SLURM_LOCAL_DIR=$DIR
EOF

# fake GPUs: character devices 1,3 (like /dev/null); GRES rejects regular files
rm -f "$DIR"/fakegpu/nvidia*
for ((i = 0; i < GPUS; i++)); do mknod "$DIR/fakegpu/nvidia$i" c 1 3; done

# munge key (kept across --fresh)
if [[ ! -s "$DIR/munge/munge.key" ]]; then
  head -c 1024 /dev/urandom >"$DIR/munge/munge.key"
fi
chmod 600 "$DIR/munge/munge.key"

# ---- 4. daemons -----------------------------------------------------------------------------------------------
MUNGE_SOCK="$DIR/run/munge.socket"
DB_SOCK="$DIR/run/mysqld.sock"
started=0

munge_ok() { munge -n -S "$MUNGE_SOCK" | unmunge -S "$MUNGE_SOCK"; }
if ! running munged; then
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  launch munged munged -F --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCK" \
    --pid-file="$DIR/run/munged.pid" --seed-file="$DIR/munge/munged.seed" --log-file="$DIR/log/munged.log"
  started=1
fi
wait_for "munged" "$DIR/log/munged.log" munge_ok

db_sql() { mariadb --no-defaults -S "$DB_SOCK" -u root "$@"; }
if ! running mariadbd; then
  if [[ ! -d "$DIR/mysql/mysql" ]]; then
    say "initialising MariaDB in $DIR/mysql"
    rm -rf "${DIR:?}/mysql"
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
      --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 \
      || { tail -n 20 "$DIR/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  rm -f "$DB_SOCK"
  launch mariadbd mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$DB_SOCK" \
    --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadb.log" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
    --innodb-buffer-pool-size=128M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900
  started=1
fi
wait_for "mariadbd" "$DIR/log/mariadb.log" db_sql -e 'SELECT 1'
db_sql <<EOF || die "could not create the slurm database user"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF

if ! running slurmdbd; then
  launch slurmdbd slurmdbd -D
  started=1
fi
list_clusters() { CLUSTERS=$(sacctmgr -n -P show cluster format=cluster); }
wait_for "slurmdbd" "$DIR/log/slurmdbd.log" list_clusters

# register the cluster (this also gives user root an association in account root) so accounting and sacct work
if ! grep -qx "$CLUSTER" <<<"$CLUSTERS"; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
  if ! sacctmgr -n -P show user root format=user | grep -qx root; then
    sacctmgr -i add user root account=root cluster="$CLUSTER" >/dev/null || die "sacctmgr add user root failed"
  fi
  say "registered cluster '$CLUSTER' in slurmdbd"
fi

if ! running slurmctld; then
  launch slurmctld slurmctld -D -i
  started=1
fi
wait_for "slurmctld" "$DIR/log/slurmctld.log" scontrol ping

if ! running slurmd; then
  launch slurmd slurmd -D -N "$NODE"
  started=1
fi

# ---- 5. wait for the node ----------------------------------------------------------------------------------------
node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }
end=$(( $(date +%s) + TIMEOUT )) resumed=0
while :; do
  st=$(node_state)
  case "$st" in
    idle|mixed|allocated|completing) break ;;
    drain*|down*|fail*|*drain)
      if (( ! resumed )); then
        say "node $NODE is '$st'; resuming it"
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        resumed=1
      fi ;;
  esac
  if (( $(date +%s) >= end )); then
    scontrol show node "$NODE" >&2 || true
    echo "--- last lines of $DIR/log/slurmd.log:" >&2; tail -n 20 "$DIR/log/slurmd.log" >&2 || true
    die "timed out after ${TIMEOUT}s waiting for node $NODE to become idle (state: '${st:-?}')"
  fi
  sleep 0.2
done

if (( started )); then
  say "cluster '$CLUSTER' is up: node $NODE is $st ($CPUS CPUs, $MEM_MB MB, $GPUS fake GPUs, partition $PARTITION, MaxArraySize=$MAX_ARRAY)"
else
  say "cluster '$CLUSTER' was already running (node $NODE is $st); nothing to do"
fi
cat <<EOF
Use it:   source $DIR/env.sh      # exports SLURM_CONF=$DIR/slurm.conf
          sbatch --wrap 'hostname'; squeue; sacct
Stop it:  bash $(cd "$(dirname "$0")" && pwd)/stop.sh $DIR   [--purge deletes $DIR]
EOF
