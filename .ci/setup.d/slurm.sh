#!/usr/bin/env bash
# A real single-node Slurm (slurmctld + slurmd + munge) for the tests of dask-jobqueue's
# SLURMCluster and of srun launches (tests/launch). Debian packages, run as root without systemd.
# Idempotent: installs only what is missing, (re)starts daemons only when not running or when
# the configuration changed, and waits until the node accepts jobs.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "slurm.sh: needs root or sudo to install and start Slurm" >&2; exit 1
  fi
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v srun >/dev/null || ! command -v munged >/dev/null; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

# --- munge: the key (the package normally creates one) and the daemon as the munge user
if [ ! -s /etc/munge/munge.key ]; then
  $SUDO mungekey --create --force 2>/dev/null \
    || $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
$SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge
$SUDO chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
$SUDO chmod 0400 /etc/munge/munge.key
if ! pgrep -u munge -x munged >/dev/null; then
  $SUDO runuser -u munge -- /usr/sbin/munged
fi

# --- slurm.conf for this host: all CPUs, memory as slurmd measures it, no accounting
host="$(hostname -s)"
cpus="$(nproc)"
mem="$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
mem="${mem:-1024}"
conf="$(cat <<CONF
# Written by mgtoolkit .ci/setup.d/slurm.sh: a single-node test cluster.
ClusterName=mgtoolkit
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
)"
$SUDO mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
changed=0
if [ ! -f /etc/slurm/slurm.conf ] || [ "$(cat /etc/slurm/slurm.conf)" != "$conf" ]; then
  printf '%s\n' "$conf" | $SUDO tee /etc/slurm/slurm.conf >/dev/null
  changed=1
fi

stop() {  # stop one daemon by the pid it recorded (never by name)
  local pidfile="$1"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    $SUDO kill "$(cat "$pidfile")"
    for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
  fi
}
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "$changed" = 1 ]; then stop /run/slurmd.pid; stop /run/slurmctld.pid; fi
running /run/slurmctld.pid || $SUDO slurmctld
running /run/slurmd.pid || $SUDO slurmd

for _ in $(seq 60); do
  state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
  case "$state" in
    idle|mix|alloc) echo "slurm.sh: node ${host} is ${state} (${cpus} CPUs, ${mem} MB)"; exit 0 ;;
    down*|drain*) $SUDO scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "slurm.sh: Slurm did not become ready; see /var/log/slurm/*.log" >&2
exit 1
