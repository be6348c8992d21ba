#!/usr/bin/env bash
# Starts or stops a newer Slurm release (24.11 or 26.05) in a Debian chroot, beside the host's 22.05.
#
#   SLURM_RELEASE=24.11 bash scripts/slurm-up.sh      (or: bash scripts/slurm-release.sh up)
#   SLURM_RELEASE=24.11 bash scripts/slurm-down.sh    (or: bash scripts/slurm-release.sh down)
#
# The release's packages come from Debian (24.11: trixie, 26.05: sid) into a `debootstrap --variant=minbase` tree
# under /var/cache/clusterra/slurm-<release>, built once and reused; it is rebuilt only when missing or broken.
# Everything of the cluster lives in that tree (config, state, logs, JWT key, munge key and socket) except its
# accounting database, which is its own on the host's MariaDB. It has its own ports and ClusterName, so the host's
# cluster and the other release run on undisturbed. The chroot sees the host's users and /home (jobs run as the
# people the console creates on the host) and /tmp. The client commands are wrappers in /run/slurm-<release>/bin;
# the settings for clients are in /run/slurm-demo-<release>/env, with the same keys as the host's.
# The cluster's settings follow slurm-up.sh's (see there and ../shared/docs/slurm-dev-cluster.md for why);
# ../shared/docs/slurm-enforcement.md §8 says what must differ between two releases on one machine.
#
# Settings (environment):
#   SLURM_RELEASE                  24.11 or 26.05
#   SLURM_DEMO_USERS="alice bob"   Linux users (on the host) given an association in the release's account
#   SLURM_DEMO_FAKE_GPUS=2         as in slurm-up.sh
#   SLURM_DEMO_TIMEOUT=60          seconds to wait for each daemon to become ready
#   SLURM_DEBIAN_MIRROR            Debian mirror for debootstrap; default: the one in /etc/apt/sources.list*
#   SLURM_DEMO_CANCEL_JOBS=1, SLURM_DEMO_PURGE=0   for down, as in slurm-down.sh; with 0 queued jobs come back on
#                                  the next up, but running ones are killed (the chroot is unmounted under them)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib-slurm.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-slurm.sh"

readonly T_START=$EPOCHREALTIME
readonly RELEASE=${SLURM_RELEASE:-}
# Suite, port prefix, cluster name and the newest slurmrestd API version each release offers (GET /openapi/v3).
case $RELEASE in
24.11) readonly SUITE=trixie PORTS=69 CLUSTER_NAME=demo2411 EXPECTED_API=v0.0.42 ;;
26.05) readonly SUITE=sid PORTS=70 CLUSTER_NAME=demo2605 EXPECTED_API=v0.0.45 ;;
*) die "SLURM_RELEASE must be 22.05 (the host's own, the default), 24.11 or 26.05, not '$RELEASE'" ;;
esac
readonly CTLD_PORT=${PORTS}17 SLURMD_PORT=${PORTS}18 DBD_PORT=${PORTS}19 REST_PORT=${PORTS}20
readonly REST_URL=http://127.0.0.1:$REST_PORT
readonly CACHE=/var/cache/clusterra
readonly ROOT=$CACHE/slurm-$RELEASE
# Written last when the tree is built: names what it was built with. Without it the tree is half-built.
readonly BUILT_MARK=$ROOT/etc/clusterra-chroot
readonly RUN_DIR=/run/slurm-demo-$RELEASE
readonly BIN_DIR=/run/slurm-$RELEASE/bin
readonly ACCOUNT=demo
PID_DIR=$RUN_DIR
# Its own database and MariaDB user: a newer slurmdbd converts a database it opens, and 22.05 cannot go back.
readonly DB_NAME=slurm_acct_db_${RELEASE/./} DB_USER=slurm${RELEASE/./}
# Paths inside the chroot, the same as the host's cluster uses on the host.
readonly R_JWT_KEY=/var/lib/slurm/slurmctld/jwt_hs256.key R_DB_PASS=/etc/slurm/slurmdbd-db.password
readonly PACKAGES="munge slurmctld slurmd slurmdbd slurmrestd slurm-client slurm-wlm-jwt-plugin"
readonly DAEMONS="munged slurmdbd slurmctld slurmd slurmrestd"
# The client commands that get a wrapper.
readonly CLIENTS="sbatch srun salloc scancel scontrol squeue sinfo sacct sacctmgr sstat sshare sprio sreport"
# Host paths shared into the chroot. /etc goes in whole, read-only, under /host/etc: the chroot's passwd, group and
# shadow are symlinks into it. A bind mount of the files themselves would keep showing the old file, because
# useradd replaces /etc/passwd with a new one rather than writing into it.
readonly SHARED_DIRS="/home /tmp"

DEMO_USERS=${SLURM_DEMO_USERS-alice bob}
FAKE_GPUS=${SLURM_DEMO_FAKE_GPUS:-2}
TIMEOUT=${SLURM_DEMO_TIMEOUT:-60}
readonly GPU_DEVICES=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom)
# The same paper nodes as slurm-up.sh's, for the `wide` partition (held multi-node jobs that never start).
readonly PAPER_NODES="NodeName=wide[1-4] NodeAddr=127.0.0.1 Port=6899 Sockets=2 CoresPerSocket=16 ThreadsPerCore=1 RealMemory=2000000 Gres=gpu:a100:4 Features=a100,ib,avx512 State=DOWN Reason=\"paper node, never starts\""
STARTED=()

# Runs a command inside a tree as root, with a clean environment (the caller's SLURM_* would leak in).
in_tree() {
    local dir=$1
    shift
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root chroot "$dir" "$@"
}
in_root() { in_tree "$ROOT" "$@"; }

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

check_settings() {
    if [[ ! $FAKE_GPUS =~ ^[0-9]+$ ]] || ((FAKE_GPUS > ${#GPU_DEVICES[@]})); then
        die "SLURM_DEMO_FAKE_GPUS must be a number from 0 to ${#GPU_DEVICES[@]}, not '$FAKE_GPUS'"
    fi
    [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "SLURM_DEMO_TIMEOUT must be a positive number of seconds, not '$TIMEOUT'"
    local u
    for u in $DEMO_USERS; do
        [[ $u =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "SLURM_DEMO_USERS: '$u' is not a valid Linux user name"
        [[ $u != root && $u != slurm ]] || die "SLURM_DEMO_USERS: '$u' is a system user, not a demo user"
    done
}

take_lock() {
    install -d -m 0755 "$RUN_DIR"
    # Daemons are started with fd 9 closed, so none of them holds the lock for its whole life.
    exec 9>"$RUN_DIR/lock"
    flock -w 300 9 || die "another run for Slurm $RELEASE holds $RUN_DIR/lock"
}

# ---------------------------------------------------------------------------------------------------------------
# The chroot

# The Debian mirror the machine's apt already uses (the first one serving the "debian" archive, not security).
debian_mirror() {
    if [[ -n ${SLURM_DEBIAN_MIRROR:-} ]]; then
        printf '%s\n' "$SLURM_DEBIAN_MIRROR"
        return
    fi
    local uri
    uri=$(
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
            awk '/^[[:space:]]*URIs:/ { for (i = 2; i <= NF; i++) print $i }
                 /^[[:space:]]*deb[[:space:]]/ { sub(/\[[^]]*\]/, ""); print $2 }' |
            grep -E '^(https?|file)://.*/debian/?$' | head -n 1
    ) || true
    [[ -n $uri ]] || die "no Debian mirror in /etc/apt/sources.list*; set SLURM_DEBIAN_MIRROR=http://deb.debian.org/debian"
    printf '%s\n' "$uri"
}

# Every mount under the chroot, deepest first.
mounts_under() {
    findmnt -rn -o TARGET | awk -v root="$1/" 'index($0 "/", root) == 1' | sort -r
}

unmount_all() {
    local dir=$1 target
    for target in $(mounts_under "$dir"); do
        umount "$target" 2>/dev/null || umount -l "$target" ||
            die "could not unmount $target; see: fuser -vm $target"
    done
}

mount_once() {
    local target=$1
    shift
    mountpoint -q "$target" && return 0
    mount "$@" "$target"
}

bind_once() {
    local source=$1 target=$2 mode=${3:-rw}
    mountpoint -q "$target" && return 0
    mount --bind "$source" "$target"
    [[ $mode == rw ]] || mount -o remount,bind,ro "$target"
}

# What the daemons and package scripts need from the kernel. /proc, /sys and /dev are the host's own; Slurm uses
# proctrack/linuxproc, so no cgroup mount is needed.
mount_kernel() {
    local dir=$1
    mount_once "$dir/proc" -t proc -o nosuid,nodev,noexec proc
    mount_once "$dir/sys" -t sysfs -o ro,nosuid,nodev,noexec sysfs
    bind_once /dev "$dir/dev"
    bind_once /dev/pts "$dir/dev/pts"
    if mountpoint -q /dev/shm; then bind_once /dev/shm "$dir/dev/shm"; fi
}

mount_shared() {
    local d
    mount_kernel "$ROOT"
    for d in $SHARED_DIRS; do
        bind_once "$d" "$ROOT$d"
    done
    install -d -m 0755 "$ROOT/host/etc"
    bind_once /etc "$ROOT/host/etc" ro
}

# Only the processes running inside this chroot.
chroot_pids() {
    local dir
    for dir in /proc/[0-9]*; do
        if [[ $dir/root -ef $ROOT ]] && pid_alive "${dir#/proc/}"; then echo "${dir#/proc/}"; fi
    done 2>/dev/null
}

# Deletes a tree that may still have mounts: /home and /tmp under it are the host's own, so it is deleted only
# once nothing is mounted there any more.
discard_tree() {
    local dir=$1
    unmount_all "$dir"
    [[ -z $(mounts_under "$dir") ]] || die "$dir still has mounts ($(mounts_under "$dir" | tr '\n' ' ')); not deleting it"
    rm -rf --one-file-system "$dir"
}

ensure_system_user() {
    local name=$1
    if ! getent passwd "$name" >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$name"
        log "created system user $name on the host"
    fi
}

build_chroot() {
    local new=$ROOT.new mirror t0 logfile=$CACHE/slurm-$RELEASE-build.log
    mirror=$(debian_mirror)
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap on the host"
        apt-get -qq -o DPkg::Lock::Timeout=600 update
        DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
            debootstrap >/dev/null || die "could not install debootstrap: apt-get install debootstrap"
    fi
    install -d -m 0755 "$CACHE" "$CACHE/debs-$SUITE"
    [[ ! -e $new ]] || discard_tree "$new"
    : >"$logfile"

    t0=$EPOCHREALTIME
    log "building the chroot: debootstrap --variant=minbase $SUITE from $mirror (log: $logfile)"
    # The cache dir keeps the base .debs, so a rebuild does not download them again.
    if ! debootstrap --variant=minbase --cache-dir="$CACHE/debs-$SUITE" "$SUITE" "$new" "$mirror" >>"$logfile" 2>&1; then
        log_tail "$logfile"
        die "debootstrap $SUITE failed (see above); check the mirror $mirror or set SLURM_DEBIAN_MIRROR"
    fi
    log "  debootstrap $SUITE done ($(since "$t0") s)"

    # Package scripts must not start daemons (they would read the wrong config); this script starts them.
    printf '#!/bin/sh\nexit 101\n' >"$new/usr/sbin/policy-rc.d"
    chmod 0755 "$new/usr/sbin/policy-rc.d"
    # sid's Release file on the archive is past its Valid-Until date; apt refuses it without this.
    printf 'Acquire::Check-Valid-Until "false";\n' >"$new/etc/apt/apt.conf.d/99clusterra"
    # munge and slurm get the host's ids before their packages create them: the chroot reads the host's passwd at
    # run time, and the files the packages create must belong to the same ids there.
    local name uid gid
    for name in munge slurm; do
        ensure_system_user "$name"
        uid=$(id -u "$name") gid=$(id -g "$name")
        chroot "$new" groupadd -o -g "$gid" "$name"
        chroot "$new" useradd -o -r -u "$uid" -g "$gid" -d /nonexistent -s /usr/sbin/nologin "$name"
    done

    t0=$EPOCHREALTIME
    mount_kernel "$new"
    # shellcheck disable=SC2086  # a list of package names
    if ! { in_tree "$new" apt-get -q -o Acquire::Check-Valid-Until=false update &&
        in_tree "$new" env DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends $PACKAGES
    } >>"$logfile" 2>&1; then
        unmount_all "$new"
        log_tail "$logfile"
        die "installing Slurm $RELEASE in the chroot failed (see above); the half-built tree is $new"
    fi
    in_tree "$new" apt-get clean
    unmount_all "$new"
    log "  installed $PACKAGES ($(since "$t0") s)"

    # The host's users, live: passwd, group and shadow point into the host's /etc, mounted at /host/etc.
    install -d -m 0755 "$new/host/etc"
    for name in passwd group shadow gshadow hosts; do
        ln -sfn "/host/etc/$name" "$new/etc/$name"
    done
    printf 'suite=%s\npackages=%s\n' "$SUITE" "$PACKAGES" >"$new/${BUILT_MARK#"$ROOT"/}"
    [[ ! -e $ROOT ]] || discard_tree "$ROOT"
    mv "$new" "$ROOT"
    log "  chroot ready: $ROOT ($(du -sm --one-file-system "$ROOT" | cut -f1) MB)"
}

# The installed Slurm, as `slurmctld -V` says it ("slurm-wlm 24.11.5"), if the tree is complete and runs.
# The binaries are tested from inside: Debian makes /usr/sbin/slurmctld an absolute link through
# /etc/alternatives, which from the host would resolve against the host's /etc (no Slurm there yet, or another).
chroot_version() {
    [[ -f $BUILT_MARK ]] && in_root test -x /usr/sbin/slurmctld -a -x /usr/sbin/slurmrestd || return 1
    [[ $(<"$BUILT_MARK") == $(printf 'suite=%s\npackages=%s' "$SUITE" "$PACKAGES") ]] || return 1
    in_root /usr/sbin/slurmctld -V 2>/dev/null
}

ensure_chroot() {
    local t0=$EPOCHREALTIME version
    if [[ -d $ROOT ]]; then
        mount_shared
        if version=$(chroot_version); then
            log "chroot $ROOT reused ($version, $(since "$t0") s)"
        else
            local busy
            busy=$(chroot_pids | xargs)
            [[ -z $busy ]] || die "the chroot $ROOT is broken but processes still run in it (PIDs $busy);" \
                "stop them first: SLURM_RELEASE=$RELEASE bash scripts/slurm-down.sh"
            warn "the chroot $ROOT is incomplete or broken; rebuilding it"
        fi
    fi
    if [[ -z ${version:-} ]]; then
        build_chroot
        mount_shared
        version=$(chroot_version) || die "the new chroot $ROOT does not run slurmctld -V; see $CACHE/slurm-$RELEASE-build.log"
    fi
    [[ $version == *" $RELEASE".* ]] ||
        die "Debian $SUITE now has $version, not Slurm $RELEASE; update the release table in ${0##*/}"
    # Must be the host's users: if the links were replaced (by apt in the chroot, say), slurm would run as nobody.
    [[ $(in_root id -u slurm 2>/dev/null) == "$(id -u slurm)" ]] ||
        die "the chroot does not see the host's users; delete $ROOT (with the cluster down) to rebuild it"
}

# ---------------------------------------------------------------------------------------------------------------
# The cluster

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# Replaces FILE only when the content differs, so an unchanged config restarts nothing. Returns 0 if it wrote.
write_if_changed() {
    local file=$1 mode=$2 owner=$3 content=$4
    if [[ -f $file ]] && cmp -s "$file" <(printf '%s\n' "$content"); then
        return 1
    fi
    (umask 077 && printf '%s\n' "$content" >"$file.new")
    chown "$owner" "$file.new"
    chmod "$mode" "$file.new"
    mv "$file.new" "$file"
    log "wrote ${file#"$ROOT"}"
}

prepare_cluster() {
    local u
    for u in slurmrest $DEMO_USERS; do
        getent passwd "$u" >/dev/null && continue
        if [[ $u == slurmrest ]]; then
            ensure_system_user slurmrest
        else
            useradd -m -s /bin/bash "$u"
            log "created user $u on the host"
        fi
    done
    install -d -o munge -g munge -m 0755 "$ROOT/run/munge"
    install -d -o slurm -g slurm -m 0755 "$ROOT/run/slurm" "$ROOT/var/log/slurm" \
        "$ROOT/var/lib/slurm/slurmctld" "$ROOT/var/lib/slurm/slurmd"
    install -d -o root -g slurm -m 0750 "$ROOT/etc/slurm/clusterra"
    [[ -s $ROOT/etc/munge/munge.key ]] || die "the chroot has no munge key; delete $ROOT to rebuild it"
    if [[ ! -s $ROOT$R_JWT_KEY ]]; then
        (umask 077 && head -c 64 /dev/urandom >"$ROOT$R_JWT_KEY.new")
        mv "$ROOT$R_JWT_KEY.new" "$ROOT$R_JWT_KEY"
        log "created JWT key $ROOT$R_JWT_KEY"
    fi
    chown slurm:slurm "$ROOT$R_JWT_KEY"
    chmod 0600 "$ROOT$R_JWT_KEY"
    [[ -s $ROOT$R_DB_PASS ]] || (umask 077 && random_hex 24 >"$ROOT$R_DB_PASS")
    if [[ ! -e $ROOT/var/log/slurm/clusterra-refusals.log ]]; then
        install -o slurm -g slurm -m 0640 /dev/null "$ROOT/var/log/slurm/clusterra-refusals.log"
    fi
}

node_line() {
    local hw kv out="NodeName=$NODE NodeAddr=127.0.0.1"
    hw=$(in_root slurmd -C 2>/dev/null | head -n 1) || true
    [[ $hw == NodeName=* ]] || die "'slurmd -C' in the chroot did not describe this machine (got: '$hw')"
    for kv in $hw; do
        case ${kv%%=*} in
        CPUs | Boards | SocketsPerBoard | CoresPerSocket | ThreadsPerCore) out+=" $kv" ;;
        RealMemory) out+=" RealMemory=$((${kv#*=} * 95 / 100))" ;;
        esac
    done
    ((FAKE_GPUS == 0)) || out+=" Gres=gpu:$FAKE_GPUS"
    printf '%s Features=avx2,ssd State=UNKNOWN' "$out"
}

CONFIG_CHANGED=0
write_configs() {
    local slurm_conf gres_conf dbd_conf i
    slurm_conf=$(
        cat <<EOF
# Written by clusterra scripts/slurm-release.sh (Slurm $RELEASE); local edits are overwritten on the next run.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$R_JWT_KEY,disable_token_creation
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# linuxproc: two clusters on one machine must not share cgroup paths.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
MinJobAge=60
MaxJobCount=50000
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
PrivateData=jobs
JobSubmitPlugins=lua
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations,limits,qos,safe
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
GresTypes=gpu
$PAPER_NODES
$(node_line)
PartitionName=cpu   Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu   Nodes=$NODE MaxTime=INFINITE State=UP
PartitionName=debug Nodes=$NODE MaxTime=00:30:00 DefaultTime=00:10:00 State=UP
PartitionName=wide  Nodes=$NODE,wide[1-4] MaxTime=2-00:00:00 DefaultTime=01:00:00 State=UP
Licenses=matlab:4,ansys:8
EOF
    )
    gres_conf=$'# Written by clusterra scripts/slurm-release.sh: fake GPUs, one File= per GPU.\nAutoDetect=off'
    for ((i = 0; i < FAKE_GPUS; i++)); do
        gres_conf+=$'\n'"NodeName=$NODE Name=gpu File=${GPU_DEVICES[i]}"
    done
    dbd_conf=$(
        cat <<EOF
# Written by clusterra scripts/slurm-release.sh (Slurm $RELEASE); local edits are overwritten on the next run.
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$R_JWT_KEY
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
PrivateData=jobs
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$(<"$ROOT$R_DB_PASS")
StorageLoc=$DB_NAME
EOF
    )
    local etc=$ROOT/etc/slurm
    # 24.11 and later set up a cgroup plugin even with proctrack/linuxproc, and there is no cgroup mount here.
    if write_if_changed "$etc/cgroup.conf" 0644 root:root "CgroupPlugin=disabled"; then CONFIG_CHANGED=1; fi
    if write_if_changed "$etc/slurm.conf" 0644 root:root "$slurm_conf"; then CONFIG_CHANGED=1; fi
    if write_if_changed "$etc/gres.conf" 0644 root:root "$gres_conf"; then CONFIG_CHANGED=1; fi
    if write_if_changed "$etc/slurmdbd.conf" 0600 slurm:slurm "$dbd_conf"; then CONFIG_CHANGED=1; fi
    # slurmctld reloads the plugin by itself when the file's mtime moves: no restart for a new copy.
    write_if_changed "$etc/job_submit.lua" 0640 root:slurm "$(<"$PLUGIN_SOURCE")" || true
    # A changed config takes effect on restart only; everything running here is ours (the chroot is).
    if ((CONFIG_CHANGED)); then
        stop_own slurmrestd slurmd
        stop_own slurmctld
        stop_own slurmdbd
    fi
}

# Polls CHECK until it succeeds; fails with the daemon's log tail on timeout, or at once if the daemon died.
wait_for() {
    local daemon=$1 logfile=$2 end=$((EPOCHSECONDS + TIMEOUT))
    shift 2
    until "$@"; do
        own_pid "$daemon" >/dev/null || {
            log_tail "$logfile"
            die "$daemon ($RELEASE) is not running (it exited during start-up; see the log above)"
        }
        if ((EPOCHSECONDS >= end)); then
            log_tail "$logfile"
            die "$daemon ($RELEASE) was not ready after ${TIMEOUT} s (raise SLURM_DEMO_TIMEOUT if the machine is slow)"
        fi
        sleep 0.2
    done
}

# Starts a daemon inside the chroot in the foreground, unless ours is running: its PID is known at once, and a
# failed start shows at once. What it prints goes to /var/log/slurm/NAME.out; its log is its own.
# USERSPEC is whom chroot runs it as; ENV is one extra VAR=value or "".
start_daemon() {
    local name=$1 userspec=$2 extra=$3 out pid end
    shift 3
    own_pid "$name" >/dev/null && return 0
    out=$ROOT/var/log/slurm/$name.out
    # It repeats the daemon's own log, which only root and slurm may read.
    [[ -e $out ]] || install -m 0600 /dev/null "$out"
    local vars=(PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/)
    [[ -z $extra ]] || vars+=("$extra")
    setsid env -i "${vars[@]}" chroot --userspec="$userspec" "$ROOT" "$@" </dev/null >>"$out" 2>&1 9>&- &
    pid=$!
    # setsid, env and chroot each exec the next: the PID counts once it is the daemon itself.
    end=$((EPOCHSECONDS + 5))
    until [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; do
        if ! pid_alive "$pid" || ((EPOCHSECONDS >= end)); then
            log_tail "$out"
            die "$name ($RELEASE) did not start (see the output above)"
        fi
        sleep 0.02
    done
    echo "$pid" >"$PID_DIR/$name.pid"
    STARTED+=("$name")
}

munge_works() { in_root sh -c 'munge -n </dev/null | unmunge' >/dev/null 2>&1; }

ensure_db() {
    tcp_open 127.0.0.1 3306 || die "MariaDB is not listening on 127.0.0.1:3306; start the host's cluster first:" \
        "bash scripts/slurm-up.sh"
    local pass host sql=""
    pass=$(<"$ROOT$R_DB_PASS")
    for host in localhost 127.0.0.1; do
        sql+="CREATE USER IF NOT EXISTS '$DB_USER'@'$host' IDENTIFIED BY '$pass';"
        sql+="ALTER USER '$DB_USER'@'$host' IDENTIFIED BY '$pass';"
        sql+="GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'$host';"
    done
    { mariadb -uroot <<<"$sql" 2>/dev/null || mariadb -uroot -h127.0.0.1 -P3306 --protocol=tcp <<<"$sql"; } ||
        die "could not create the MariaDB user '$DB_USER' (needs root access to MariaDB on 127.0.0.1:3306)"
}

DB_CLUSTERS=""
sacctmgr_ready() { DB_CLUSTERS=$(in_root sacctmgr -n -P list cluster format=cluster 2>/dev/null); }
ctld_ready() { in_root scontrol ping 2>/dev/null | grep -q 'is UP'; }

RESUMED=0
node_ready() {
    local state
    state=$(in_root sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1)
    case $state in
    idle | mixed | allocated | completing) return 0 ;;
    drain* | down | inval | fail)
        if ((RESUMED == 0)); then
            log "node $NODE is $state; resuming it"
            in_root scontrol update nodename="$NODE" state=resume || true
            RESUMED=1
        fi
        ;;
    esac
    return 1
}

ensure_associations() {
    # The account is named as on the host's cluster ("demo"), so a grant's account reads the same on every
    # release; the cluster name keeps the associations apart.
    local have u missing=()
    have=$(in_root sacctmgr -n -P list assoc cluster="$CLUSTER_NAME" account="$ACCOUNT" format=user)
    if [[ -z $have ]]; then
        in_root sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER_NAME" description="demo users" \
            organization=demo >/dev/null
        log "added account $ACCOUNT"
    fi
    for u in $DEMO_USERS slurm; do
        grep -qx "$u" <<<"$have" || missing+=("$u")
    done
    ((${#missing[@]})) || return 0
    local IFS=,
    in_root sacctmgr -i add user name="${missing[*]}" account="$ACCOUNT" cluster="$CLUSTER_NAME" >/dev/null
    log "added associations for ${missing[*]} in account $ACCOUNT"
}

TOKEN="" TOKEN_AT=0
rest_get() {
    if [[ -z $TOKEN ]] || ((EPOCHSECONDS - TOKEN_AT > 40)); then
        TOKEN=$(in_root scontrol token username=slurm lifespan=60 2>/dev/null) || return 1
        TOKEN=${TOKEN#SLURM_JWT=}
        TOKEN_AT=$EPOCHSECONDS
    fi
    curl -sS -m 5 -H @- "$REST_URL$1" 2>/dev/null <<EOF
X-SLURM-USER-NAME: slurm
X-SLURM-USER-TOKEN: $TOKEN
EOF
}

API_VERSION_FOUND=""
# Ready when it serves its OpenAPI document, answers ping in the newest version it offers, and knows the
# cluster in accounting.
rest_ready() {
    # The document escapes its slashes: "\/slurm\/v0.0.42\/ping".
    API_VERSION_FOUND=$(rest_get /openapi/v3 | grep -oE '"\\?/slurm\\?/v0\.0\.[0-9]+' | grep -oE 'v0\.0\.[0-9]+' |
        sort -uV | tail -n 1)
    [[ -n $API_VERSION_FOUND ]] || return 1
    # v0.0.45 dropped "pinged": "UP"; every version has "responding": true.
    rest_get "/slurm/$API_VERSION_FOUND/ping" | grep -Eq '"responding": *true' || return 1
    rest_get "/slurmdb/$API_VERSION_FOUND/clusters" | grep -Eq "\"name\": *\"$CLUSTER_NAME\""
}

start_slurmrestd() {
    local log=$ROOT/var/log/slurm/slurmrestd.out owner
    if ! own_pid slurmrestd >/dev/null; then
        owner=$(ss -Hltnp "sport = :$REST_PORT" 2>/dev/null | grep -o '(("[^"]*"' | head -n 1 | tr -d '("') || true
        [[ -z $owner ]] || die "$owner already listens on port $REST_PORT, which Slurm $RELEASE's slurmrestd needs"
        # No -s/-d: it loads every OpenAPI plugin and data parser the release ships. It logs to stderr only.
        start_daemon slurmrestd root:root SLURM_JWT=daemon \
            /usr/sbin/slurmrestd -u slurmrest -g slurmrest -a rest_auth/jwt "127.0.0.1:$REST_PORT"
    fi
    wait_for slurmrestd "$log" rest_ready
    [[ $API_VERSION_FOUND == "$EXPECTED_API" ]] ||
        warn "slurmrestd $RELEASE offers $API_VERSION_FOUND as its newest API, not $EXPECTED_API as expected"
}

# Host-side client commands: each runs the release's own command inside the chroot, as whoever calls it.
# root goes in with chroot; anyone else (runuser -u alice -- sbatch ...) through a user namespace that maps only
# their own ids, so munge and Slurm see exactly who they are and nothing more is allowed than outside.
# A console terminal on a cluster whose Slurm commands are elsewhere (Cluster.slurm_bin, which the terminal
# passes as CLUSTERRA_SLURM_BIN) finds them first: /etc/profile sets PATH anew for a login shell, then reads
# this. Only an absolute folder is taken; other shells are left as they are.
write_profile() {
    local text
    text=$(
        cat <<'PROFILE'
# Written by clusterra scripts/slurm-release.sh: a console terminal finds its cluster's Slurm commands first.
case "${CLUSTERRA_SLURM_BIN:-}" in
/*) PATH="$CLUSTERRA_SLURM_BIN:$PATH"; export PATH ;;
esac
PROFILE
    )
    write_if_changed /etc/profile.d/clusterra-slurm.sh 0644 root:root "$text" >/dev/null || true
}

write_wrappers() {
    local runner=/run/slurm-$RELEASE/run text c
    install -d -m 0755 "$BIN_DIR"
    text=$(
        cat <<EOF
#!/bin/bash
# Written by clusterra scripts/slurm-release.sh: runs Slurm $RELEASE's command of this name in its chroot.
root=$ROOT
cmd=/usr/bin/\${0##*/}
if [[ ! -e \$root/proc/self || ! -x \$root\$cmd ]]; then
    echo "\${0##*/}: Slurm $RELEASE is not up; run: SLURM_RELEASE=$RELEASE bash scripts/slurm-up.sh" >&2
    exit 1
fi
# A SLURM_CONF meant for the host's commands would point this one at the wrong cluster.
unset SLURM_CONF
# The chroot shares /home and /tmp with the host; from elsewhere the command runs in /.
enter='cd "\$1" 2>/dev/null || { case \${2##*/} in sbatch|srun|salloc) echo "\${2##*/}: \$1 is not in the Slurm $RELEASE chroot (only /home and /tmp are); working in /" >&2;; esac; cd /; }; shift; exec "\$@"'
if ((EUID == 0)); then
    exec chroot "\$root" /bin/sh -c "\$enter" sh "\$PWD" "\$cmd" "\$@"
fi
exec unshare --user --map-current-user --mount --root="\$root" /bin/sh -c "\$enter" sh "\$PWD" "\$cmd" "\$@"
EOF
    )
    write_if_changed "$runner" 0755 root:root "$text" >/dev/null || true
    for c in $CLIENTS; do
        [[ -L $BIN_DIR/$c ]] || ln -sfn "$runner" "$BIN_DIR/$c"
    done
}

write_env() {
    local env_text
    env_text=$(
        cat <<EOF
SLURMRESTD_URL=$REST_URL
SLURM_API_VERSION=$API_VERSION_FOUND
SLURM_JWT_KEY_FILE=$ROOT$R_JWT_KEY
SLURM_CLUSTER=$CLUSTER_NAME
SLURM_PARTITIONS="cpu gpu debug wide"
SLURM_DEMO_USERS="$DEMO_USERS"
SLURM_ACCOUNTING=1
SLURM_RELEASE=$RELEASE
SLURM_BIN=$BIN_DIR
SLURM_ROOT=$ROOT
SLURM_POLICY_FILE=$ROOT/etc/slurm/clusterra/policy.lua
SLURM_REFUSAL_LOG=$ROOT/var/log/slurm/clusterra-refusals.log
EOF
    )
    write_if_changed "$RUN_DIR/env" 0644 root:root "$env_text" >/dev/null || true
}

# The plugin is written for Lua 5.1 (loadstring, setfenv), which both releases link. A script that does not load at
# start stops slurmctld (its log tail says why); a copy that fails later is logged and the previous one kept, so an
# error newer than the installed copy is worth saying here.
check_plugin() {
    local since problem
    since=$(date -r "$ROOT/etc/slurm/job_submit.lua" +%Y-%m-%dT%H:%M:%S.%3N)
    problem=$(awk -v since="[$since" '$1 > since && /job_submit\/lua/ && /error/ { p = $0 } END { print p }' \
        "$ROOT/var/log/slurm/slurmctld.log" 2>/dev/null) || true
    [[ -z $problem ]] || warn "Slurm $RELEASE's slurmctld did not take job_submit.lua: $problem"
}

up() {
    require_root
    check_settings
    take_lock
    local d t0 pid
    for d in $DAEMONS; do
        own_pid "$d" >/dev/null || rm -f "$PID_DIR/$d.pid"
    done
    # A daemon of this chroot whose PID file is gone (/run emptied by hand) is still ours: adopt it rather than
    # start a second one on the same ports.
    if [[ -d $ROOT ]]; then
        for pid in $(chroot_pids); do
            d=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
            if [[ " $DAEMONS " == *" $d "* ]] && ! own_pid "$d" >/dev/null; then echo "$pid" >"$PID_DIR/$d.pid"; fi
        done
    fi
    ensure_chroot
    prepare_cluster
    write_configs

    t0=$EPOCHREALTIME
    # In the foreground munged logs to stderr only.
    start_daemon munged munge:munge "" /usr/sbin/munged -F
    wait_for munged "$ROOT/var/log/slurm/munged.out" munge_works
    own_pid slurmdbd >/dev/null || ensure_db
    start_daemon slurmdbd root:root "" /usr/sbin/slurmdbd -D
    wait_for slurmdbd "$ROOT/var/log/slurm/slurmdbd.log" sacctmgr_ready
    if ! grep -qx "$CLUSTER_NAME" <<<"$DB_CLUSTERS"; then
        in_root sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null
        log "added cluster $CLUSTER_NAME to accounting ($DB_NAME)"
    fi
    start_daemon slurmctld root:root "" /usr/sbin/slurmctld -D
    wait_for slurmctld "$ROOT/var/log/slurm/slurmctld.log" ctld_ready
    start_daemon slurmd root:root "" /usr/sbin/slurmd -D -N "$NODE"
    wait_for slurmd "$ROOT/var/log/slurm/slurmd.log" node_ready
    ensure_associations
    start_slurmrestd
    write_wrappers
    write_profile
    write_env
    check_plugin

    local started="nothing (all were running)"
    ((${#STARTED[@]} == 0)) || started="${STARTED[*]}"
    log "Slurm $RELEASE cluster '$CLUSTER_NAME' ready in $(since "$T_START") s (daemons $(since "$t0") s);" \
        "started: $started"
    log "  slurmrestd $REST_URL (auth/jwt, $API_VERSION_FOUND); ports $CTLD_PORT/$SLURMD_PORT/$DBD_PORT;" \
        "accounting in MariaDB $DB_NAME"
    log "  partitions: cpu (default), gpu (fake GPUs: $FAKE_GPUS), debug, wide; users: ${DEMO_USERS:-none}"
    log "  settings for clients: $RUN_DIR/env; commands: $BIN_DIR; chroot and logs: $ROOT (/var/log/slurm)"
}

# ---------------------------------------------------------------------------------------------------------------
cancel_jobs() {
    local ids end=$((EPOCHSECONDS + 20))
    ids=$(in_root squeue -h -o %A 2>/dev/null) || {
        warn "slurmctld $RELEASE did not answer; jobs were not cancelled"
        return 0
    }
    [[ -n $ids ]] || return 0
    # shellcheck disable=SC2086  # one job id per word
    in_root scancel $ids 2>/dev/null || true
    log "cancelled $(wc -w <<<"$ids") jobs; waiting for them to end"
    while [[ -n $(in_root squeue -h -t PD,R,CG,S,CF,RQ,RS,SO,ST -o %A 2>/dev/null) ]]; do
        if ((EPOCHSECONDS >= end)); then
            warn "jobs still ending after 20 s; stopping the daemons anyway"
            return 0
        fi
        sleep 0.2
    done
}

down() {
    require_root
    local cancel=${SLURM_DEMO_CANCEL_JOBS:-1} purge=${SLURM_DEMO_PURGE:-0}
    [[ $cancel == [01] ]] || die "SLURM_DEMO_CANCEL_JOBS must be 0 or 1, not '$cancel'"
    [[ $purge == [01] ]] || die "SLURM_DEMO_PURGE must be 0 or 1, not '$purge'"
    take_lock
    rm -f "$RUN_DIR/env"
    rm -rf "/run/slurm-$RELEASE"
    if ((cancel)) && own_pid slurmctld >/dev/null; then cancel_jobs; fi
    # slurmctld first: with slurmd gone, 26.05's slurmctld waits about 9 s on its agent threads before it exits.
    stop_own slurmrestd slurmctld
    stop_own slurmd
    stop_own slurmdbd
    stop_own munged
    # Whatever still runs in the chroot (a job's leftovers, a daemon started by hand) would keep /home mounted.
    local left
    if [[ -d $ROOT ]]; then
        left=$(chroot_pids | xargs)
        if [[ -n $left ]]; then
            warn "stopping processes still running in $ROOT: PIDs $left"
            # shellcheck disable=SC2086  # one PID per word
            kill -TERM $left 2>/dev/null || true
            sleep 2
            left=$(chroot_pids | xargs)
            # shellcheck disable=SC2086
            [[ -z $left ]] || kill -KILL $left 2>/dev/null || true
        fi
        if ((purge)); then
            find "$ROOT/var/lib/slurm/slurmctld" -mindepth 1 ! -path "$ROOT$R_JWT_KEY" -delete
            find "$ROOT/var/lib/slurm/slurmd" -mindepth 1 -delete
            log "wiped job and node state in $ROOT/var/lib/slurm (kept the JWT key)"
        fi
        unmount_all "$ROOT"
    fi
    log "Slurm $RELEASE down in $(since "$T_START") s (the chroot $ROOT stays for the next up)"
}

case ${1:-} in
up) up ;;
down) down ;;
*) die "usage: SLURM_RELEASE=24.11|26.05 bash ${0##*/} up|down" ;;
esac
