#!/usr/bin/env bash
# A one-node Slurm on localhost for tests and trying the templates: `up` installs Debian's
# slurm-wlm when missing (root only), writes a slurm.conf under $WEYL_SLURM_DIR and starts
# slurmctld + slurmd; `down` stops them; `env` prints the SLURM_CONF export clients need.
# No cgroups, no accounting, no munge (auth/none): a test fixture, not a production setup.
set -euo pipefail
DIR=${WEYL_SLURM_DIR:-/tmp/weyl-slurm}
CONF=$DIR/slurm.conf
cmd=${1:-}

install_slurm() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "local-cluster: slurm is not installed and installing needs root: apt-get install slurm-wlm slurmctld slurmd slurm-client" >&2
    return 1
  fi
  local pkgs=(slurm-wlm slurmctld slurmd slurm-client)
  # A fresh container has no package lists yet: update them once when the first try fails.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null \
    || { apt-get update -q >/dev/null \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; }
}

write_conf() {
  mkdir -p "$DIR"/{state,spool,log,run}
  local cpus mem
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)   # GNU nproc obeys OMP_NUM_THREADS
  mem=$(( $(free -m | awk '/^Mem:/{print $2}') - 512 ))
  cat > "$CONF" <<CONF
ClusterName=weyl-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MailProg=/bin/true
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=${WEYL_SLURMCTLD_PORT:-6917}
SlurmdPort=${WEYL_SLURMD_PORT:-6918}
KillWait=10
# A requeued job may start again only after its credential expired (default 120 s), and the
# scheduler then waits for its next pass: keep both short so a requeue takes seconds.
AuthInfo=cred_expire=5
SchedulerParameters=bf_interval=1,sched_interval=1
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
}

stop_daemons() {
  for name in slurmd slurmctld; do
    local pidfile=$DIR/run/$name.pid
    if [ -f "$pidfile" ]; then
      kill -9 "$(cat "$pidfile")" 2>/dev/null || true   # slurmd ignores SIGTERM without its controller
      rm -f "$pidfile"
    fi
  done
  pkill -9 -f "slurmctld -f $CONF" 2>/dev/null || true
  pkill -9 -f "slurmd -f $CONF" 2>/dev/null || true
}

case "$cmd" in
  up)
    install_slurm
    stop_daemons
    write_conf
    export SLURM_CONF=$CONF
    slurmctld -f "$CONF" -c
    slurmd -f "$CONF" -c
    for _ in $(seq 1 60); do
      state=$(timeout 5 sinfo -h -o %T 2>/dev/null || true)
      case "$state" in idle*|mixed*|alloc*) echo "local-cluster: up (SLURM_CONF=$CONF)"; exit 0 ;; esac
      sleep 0.5
    done
    echo "local-cluster: node did not become idle; see $DIR/log" >&2
    exit 1
    ;;
  down)
    stop_daemons
    echo "local-cluster: down"
    ;;
  env)
    echo "export SLURM_CONF=$CONF"
    ;;
  *)
    echo "usage: slurm/local-cluster.sh up|down|env   (state under \$WEYL_SLURM_DIR, default /tmp/weyl-slurm)" >&2
    exit 2
    ;;
esac
