# Shared paths and helpers for slurm-up.sh and slurm-down.sh (sourced, never run).
# The constants are used by the scripts that source this file, which shellcheck cannot see from here.
# shellcheck shell=bash disable=SC2034

readonly DEMO_RUN=/run/slurm-demo
readonly SLURM_ETC=/etc/slurm
readonly SLURM_LOGS=/var/log/slurm
readonly CTLD_STATE=/var/lib/slurm/slurmctld
readonly SLURMD_SPOOL=/var/lib/slurm/slurmd
readonly JWT_KEY=$CTLD_STATE/jwt_hs256.key
readonly DB_PASS_FILE=$SLURM_ETC/slurmdbd-db.password
# The console's policy, and the job_submit plugin that enforces it (see the README, "Slurm enforces the policy").
readonly POLICY_DIR=$SLURM_ETC/clusterra
readonly REFUSAL_LOG=$SLURM_LOGS/clusterra-refusals.log
PLUGIN_SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/access/slurm/job_submit.lua
readonly PLUGIN_SOURCE
readonly CLUSTER=demo
# NodeName is fixed so the config does not depend on the machine's hostname.
readonly NODE=localhost
readonly API_VERSION=v0.0.38
# Where own_pid and stop_own find the PID files of the daemons we started; a release in a chroot
# (slurm-release.sh) keeps its own.
PID_DIR=$DEMO_RUN

log() { printf '%s: %s\n' "${0##*/}" "$*"; }
warn() { printf '%s: warning: %s\n' "${0##*/}" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

require_root() {
    [[ $EUID -eq 0 ]] || die "must run as root (the daemons, users and /etc/slurm need it); try: sudo $0"
}

# Timing for the summary lines, in seconds with one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# A zombie still has /proc/PID, but it is gone for every purpose here.
pid_alive() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# Prints the PID of a daemon this project started, if it is still that daemon.
# PIDs get reused, so a recorded PID only counts while /proc/PID/comm still names it.
own_pid() {
    local name=$1 pid comm
    [[ -r $PID_DIR/$name.pid ]] || return 1
    read -r pid <"$PID_DIR/$name.pid" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name" ]] && pid_alive "$pid" || return 1
    printf '%s\n' "$pid"
}

# PID 1 of some sandboxes never reaps orphans, so a stopped daemon can linger as a zombie that pgrep still lists.
# Only a process under this machine's root counts: the daemons of a release in a chroot (slurm-release.sh) have
# the same names as the host's and must not pass for them.
is_running() {
    local pid
    for pid in $(pgrep -x "$1"); do
        if pid_alive "$pid" && [[ /proc/$pid/root -ef / ]]; then return 0; fi
    done
    return 1
}

# SIGTERM the daemons of one group that we own, together, so a group costs one wait,
# not one per daemon; SIGKILL only those still there after the grace period.
stop_own() {
    local name pid pids=() names=() left
    for name in "$@"; do
        if pid=$(own_pid "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            names+=("$name")
        fi
        rm -f "$PID_DIR/$name.pid" "$PID_DIR/$name.args"
    done
    ((${#pids[@]})) || return 0
    local t0=$EPOCHREALTIME end=$((EPOCHSECONDS + 12))
    while :; do
        left=()
        for pid in "${pids[@]}"; do
            if pid_alive "$pid"; then left+=("$pid"); fi
        done
        ((${#left[@]})) || break
        if ((EPOCHSECONDS >= end)); then
            warn "still running after 12 s, sending SIGKILL to PIDs ${left[*]}"
            kill -KILL "${left[@]}" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    log "stopped ${names[*]} ($(since "$t0") s)"
}

# The last lines of a log, indented, for failure messages.
log_tail() {
    local file=$1
    if [[ -r $file ]]; then
        printf 'last lines of %s:\n' "$file" >&2
        tail -n 20 "$file" | sed 's/^/    /' >&2
    fi
}
