#!/usr/bin/env bash
# A real single-node Slurm (munge, slurmctld, slurmd) for the slurm launcher's tests, all
# state under $HPCDESK_SLURM_DIR (default /var/tmp/hpcdesk-slurm). Needs root and the Debian
# packages slurmctld slurmd slurm-client munge.
#   ci/slurm.sh up      start (idempotent); prints SLURM_CONF=…
#   ci/slurm.sh down    stop
set -euo pipefail

DIR=${HPCDESK_SLURM_DIR:-/var/tmp/hpcdesk-slurm}
CTLD_PORT=${HPCDESK_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${HPCDESK_SLURMD_PORT:-6818}
CONF="$DIR/slurm.conf"
. "$(dirname "$0")/lib.sh"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
  safe_dir "$DIR"
  for d in state spool log; do safe_dir "$DIR/$d"; done
  safe_dir "$DIR/munge" 0755 munge
  [ -f "$DIR/munge/munge.key" ] || runuser -u munge -- mungekey -c -k "$DIR/munge/munge.key"
  if ! running "$DIR/munge/munged.pid"; then
    runuser -u munge -- munged -S "$DIR/munge/munge.socket.2" --key-file="$DIR/munge/munge.key" \
      --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
      --seed-file="$DIR/munge/munged.seed"
  fi
  local host
  host=$(hostname -s)
  cat >"$CONF" <<CONF
ClusterName=hpcdesk-ci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket.2
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  cat >"$DIR/cgroup.conf" <<'CONF'
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
CONF
  chmod 644 "$CONF" "$DIR/cgroup.conf"
  export SLURM_CONF="$CONF"
  if ! running "$DIR/slurmctld.pid"; then
    setsid slurmctld -D -i -f "$CONF" </dev/null >"$DIR/log/slurmctld.out" 2>&1 &
  fi
  if ! running "$DIR/slurmd.pid"; then
    setsid slurmd -D -f "$CONF" </dev/null >"$DIR/log/slurmd.out" 2>&1 &
  fi
  for _ in $(seq 1 150); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = idle ] || [ "$state" = mixed ] || [ "$state" = allocated ] && break
    sleep 0.1
  done
  state=$(sinfo -h -o %T 2>/dev/null || true)
  case "$state" in
    idle|mixed|allocated) ;;
    *) echo "slurm did not come up (node state: ${state:-none})" >&2
       tail -5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
       exit 1 ;;
  esac
  echo "SLURM_CONF=$CONF"
}

down() {
  for f in slurmd slurmctld; do
    running "$DIR/$f.pid" && kill "$(cat "$DIR/$f.pid")" 2>/dev/null || true
  done
  running "$DIR/munge/munged.pid" && kill "$(cat "$DIR/munge/munged.pid")" 2>/dev/null || true
  return 0
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
