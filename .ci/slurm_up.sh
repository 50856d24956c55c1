#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, every file of it under DIR (nothing in /etc or /run):
#   .ci/slurm_up.sh DIR [PARTITION]   start munged, slurmctld and slurmd; returns once the node is
#                                     idle and prints SLURM_CONF=DIR/slurm.conf (export it, then
#                                     sbatch/sinfo/srun talk to this cluster)
#   .ci/slurm_up.sh --stop DIR        stop the daemons it started (by their pid files)
# If Slurm cannot start it stops what it started and exits 1 with one line on stderr,
# "slurm_up: <reason>". Every wait has a time limit. Run it as root (slurmd runs jobs as their
# submitter). tests/test_slurm_cluster.py runs a real sweep through it.
set -uo pipefail

fail() {
    echo "slurm_up: $*" >&2
    [ -n "${dir:-}" ] && stop_daemons
    exit 1
}
stop_daemons() {
    local pidfile pid
    for pidfile in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
        [ -s "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        rm -f "$pidfile"
    done
}
last_log_line() { [ -s "$1" ] && tail -n 1 "$1" || echo "no log at $1"; }

if [ "${1:-}" = "--stop" ]; then
    dir=$(realpath "${2:?usage: slurm_up.sh --stop DIR}")
    export SLURM_CONF=$dir/slurm.conf
    # Jobs still running (say, of a test that timed out) go first, while slurmctld can cancel them.
    if [ -s "$dir/slurmctld.pid" ] && timeout 10 scancel --user="$(id -un)" 2>/dev/null; then
        for _ in $(seq 20); do
            [ -z "$(timeout 5 squeue --noheader 2>&1)" ] && break
            sleep 0.5
        done
    fi
    stop_daemons
    exit 0
fi
[ $# -ge 1 ] || fail "usage: slurm_up.sh DIR [PARTITION]"
for binary in munged mungekey slurmctld slurmd sinfo sbatch srun; do
    command -v "$binary" >/dev/null \
        || fail "$binary not installed (Debian: apt-get install slurm-wlm munge)"
done
[ "$(id -u)" = 0 ] || fail "must run as root: slurmd starts jobs as the user who submitted them"
mkdir -p "$1" && dir=$(realpath "$1") || fail "cannot create $1"
partition=${2:-debug}
mkdir -p "$dir/spool" "$dir/state" && chmod 700 "$dir" || fail "cannot write in $dir"

# MUNGE authenticates Slurm's messages: a fresh key and a daemon on a socket of our own (--force:
# DIR may lie in a private folder, e.g. pytest's, where munged wants every user to reach it).
mungekey --create --force --keyfile="$dir/munge.key" || fail "mungekey could not create a key"
timeout 10 munged --force --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed" \
    || fail "munged did not start: $(last_log_line "$dir/munged.log")"

# The node as slurmd sees the hardware (CPUs, sockets, cores, threads), with the memory Slurm may
# give to jobs 10% below what the machine has. Free ports, so a cluster already here is no matter.
hardware=$(timeout 10 slurmd -C | head -n 1 | tr ' ' '\n')
cpus=$(grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' <<<"$hardware")
cpus=$(paste -sd ' ' <<<"$cpus")
memory=$(sed -n 's/^RealMemory=//p' <<<"$hardware")
[ -n "$cpus" ] && [ -n "$memory" ] || fail "slurmd -C did not describe this machine: $hardware"
read -r ctld_port slurmd_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))') || fail "no free ports"
node=$(hostname -s)
user=$(id -un)
cat >"$dir/slurm.conf" <<EOF
ClusterName=recmig-ci
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 $cpus RealMemory=$((memory * 9 / 10)) State=UNKNOWN
PartitionName=$partition Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$dir/slurm.conf

# Both daemons fork; the child writes the pid file a moment later. -i: ignore the state a previous
# cluster left in DIR.
started() {
    for _ in $(seq 100); do [ -s "$dir/$1.pid" ] && return 0; sleep 0.1; done
    return 1
}
timeout 30 slurmctld -i && started slurmctld \
    || fail "slurmctld did not start: $(last_log_line "$dir/slurmctld.log")"
timeout 30 slurmd -N "$node" && started slurmd \
    || fail "slurmd did not start: $(last_log_line "$dir/slurmd.log")"

deadline=$((SECONDS + ${SLURM_UP_TIMEOUT:-60}))
state=""
while [ $SECONDS -lt $deadline ]; do
    for daemon in slurmctld slurmd; do
        pid=$(cat "$dir/$daemon.pid" 2>/dev/null)
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
            || fail "$daemon exited: $(last_log_line "$dir/$daemon.log")"
    done
    state=$(timeout 5 sinfo --noheader --nodes="$node" --format=%T 2>&1)
    [ "$state" = idle ] && { echo "SLURM_CONF=$SLURM_CONF"; exit 0; }
    sleep 1
done
fail "node $node not idle after ${SLURM_UP_TIMEOUT:-60}s (sinfo: ${state:-nothing}; slurmd.log: $(last_log_line "$dir/slurmd.log"))"
