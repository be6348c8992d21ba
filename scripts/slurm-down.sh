#!/usr/bin/env bash
# Stops the daemons that slurm-up.sh started (and only those), after cancelling the cluster's jobs.
#
# Settings (environment):
#   SLURM_DEMO_CANCEL_JOBS=1   0: leave jobs alone (their state is saved and they come back with the next up)
#   SLURM_DEMO_PURGE=0         1: also wipe Slurm's job and node state (the JWT key and the accounting DB stay)
#   SLURM_RELEASE=22.05        24.11 or 26.05: stop that release's chroot cluster instead (slurm-release.sh)
set -euo pipefail

# Any other release runs in a chroot beside the host's, by scripts/slurm-release.sh; unset means 22.05 (the host's).
if [[ ${SLURM_RELEASE:-22.05} != 22.05 ]]; then
    exec bash "$(dirname "${BASH_SOURCE[0]}")/slurm-release.sh" down
fi

# shellcheck source-path=SCRIPTDIR source=lib-slurm.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-slurm.sh"

readonly T_START=$EPOCHREALTIME
CANCEL_JOBS=${SLURM_DEMO_CANCEL_JOBS:-1}
PURGE=${SLURM_DEMO_PURGE:-0}
readonly DAEMONS=(slurmrestd slurmd slurmctld slurmdbd mariadbd munged)

# Jobs are cancelled while slurmd still runs, so no slurmstepd (and no user process) outlives the cluster.
cancel_jobs() {
    local ids end=$((EPOCHSECONDS + 20))
    ids=$(squeue -h -o %A 2>/dev/null) || {
        warn "slurmctld did not answer; jobs were not cancelled"
        return 0
    }
    [[ -n $ids ]] || return 0
    # shellcheck disable=SC2086  # one job id per word
    scancel $ids 2>/dev/null || true
    log "cancelled $(wc -w <<<"$ids") jobs; waiting for them to end"
    # KillWait=5 bounds how long a job can take to die after its SIGTERM.
    while [[ -n $(squeue -h -t PD,R,CG,S,CF,RQ,RS,SO,ST -o %A 2>/dev/null) ]] || is_running slurmstepd; do
        if ((EPOCHSECONDS >= end)); then
            warn "jobs still ending after 20 s; stopping the daemons anyway"
            return 0
        fi
        sleep 0.2
    done
}

purge_state() {
    local d
    for d in slurmctld slurmd; do
        if is_running "$d"; then
            warn "$d (not started by slurm-up.sh) is still running; its state was not wiped"
            return 0
        fi
    done
    # The JWT key lives beside the job state but must survive: running consoles hold tokens signed with it.
    find "$CTLD_STATE" -mindepth 1 ! -path "$JWT_KEY" -delete
    find "$SLURMD_SPOOL" -mindepth 1 -delete
    log "wiped job and node state in $CTLD_STATE and $SLURMD_SPOOL (kept $JWT_KEY)"
}

main() {
    require_root
    [[ $CANCEL_JOBS == [01] ]] || die "SLURM_DEMO_CANCEL_JOBS must be 0 or 1, not '$CANCEL_JOBS'"
    [[ $PURGE == [01] ]] || die "SLURM_DEMO_PURGE must be 0 or 1, not '$PURGE'"
    [[ -d $DEMO_RUN ]] || install -d -m 0755 "$DEMO_RUN"
    exec 9>"$DEMO_RUN/lock"
    flock -w 300 9 || die "another slurm-up/slurm-down run holds $DEMO_RUN/lock"

    local d own=()
    for d in "${DAEMONS[@]}"; do
        if own_pid "$d" >/dev/null; then own+=("$d"); fi
    done
    # The env file describes a running cluster; a client that reads it after down should find nothing.
    rm -f "$DEMO_RUN/env"

    if ((${#own[@]} == 0)); then
        log "nothing to stop (no daemon started by slurm-up.sh is running)"
    else
        if ((CANCEL_JOBS)) && own_pid slurmctld >/dev/null; then cancel_jobs; fi
        stop_own slurmrestd slurmd
        stop_own slurmctld
        stop_own slurmdbd
        stop_own mariadbd munged
    fi
    for d in "${DAEMONS[@]}"; do
        rm -f "$DEMO_RUN/$d.pid"
        if is_running "$d"; then log "left running (not started by slurm-up.sh): $d"; fi
    done
    if ((PURGE)); then purge_state; fi
    log "done in $(since "$T_START") s"
}

main "$@"
