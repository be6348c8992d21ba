#!/usr/bin/env bash
# Starts (or checks) a single-node Slurm 22.05 cluster "demo" with slurmrestd on loopback, for tests and the demo.
#
# Idempotent: on a running cluster it changes nothing. It only ever restarts or stops daemons it started itself
# (recorded in /run/slurm-demo/<name>.pid). See ../shared/docs/slurm-dev-cluster.md for why each setting is here.
#
# Settings (environment):
#   SLURM_DEMO_ACCOUNTING=1        0: no slurmdbd, no /slurmdb API
#   SLURM_DEMO_USERS="alice bob"   Linux users created and given an association in account "demo"
#   SLURM_DEMO_FAKE_GPUS=2         GPUs faked with gres File= lines on character devices (0-5)
#   SLURMRESTD_LISTEN=127.0.0.1:6820
#   SLURM_DEMO_TIMEOUT=60          seconds to wait for each daemon to become ready
#   SLURM_RELEASE=22.05            24.11 or 26.05: that release instead, in a chroot beside this one (slurm-release.sh)
set -euo pipefail

# Any other release runs in a chroot beside the host's, by scripts/slurm-release.sh; unset means 22.05 (the host's).
if [[ ${SLURM_RELEASE:-22.05} != 22.05 ]]; then
    exec bash "$(dirname "${BASH_SOURCE[0]}")/slurm-release.sh" up
fi

# shellcheck source-path=SCRIPTDIR source=lib-slurm.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-slurm.sh"

readonly T_START=$EPOCHREALTIME

ACCOUNTING=${SLURM_DEMO_ACCOUNTING:-1}
DEMO_USERS=${SLURM_DEMO_USERS-alice bob}
FAKE_GPUS=${SLURM_DEMO_FAKE_GPUS:-2}
LISTEN=${SLURMRESTD_LISTEN:-127.0.0.1:6820}
TIMEOUT=${SLURM_DEMO_TIMEOUT:-60}
# Any character device will do: Slurm only needs one distinct file per GPU to count it.
readonly GPU_DEVICES=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom)

STARTED=()     # daemons this run started, for the summary
SLURM_CHANGED=0
DBD_CHANGED=0

check_settings() {
    [[ $ACCOUNTING == [01] ]] || die "SLURM_DEMO_ACCOUNTING must be 0 or 1, not '$ACCOUNTING'"
    if [[ ! $FAKE_GPUS =~ ^[0-9]+$ ]] || ((FAKE_GPUS > ${#GPU_DEVICES[@]})); then
        die "SLURM_DEMO_FAKE_GPUS must be a number from 0 to ${#GPU_DEVICES[@]}, not '$FAKE_GPUS'"
    fi
    [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "SLURM_DEMO_TIMEOUT must be a positive number of seconds, not '$TIMEOUT'"
    [[ $LISTEN =~ ^[^:/[:space:]]+:[0-9]+$ ]] || die "SLURMRESTD_LISTEN must be HOST:PORT, not '$LISTEN'"
    local u
    for u in $DEMO_USERS; do
        [[ $u =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "SLURM_DEMO_USERS: '$u' is not a valid Linux user name"
        [[ $u != root && $u != slurm ]] || die "SLURM_DEMO_USERS: '$u' is a system user, not a demo user"
    done
}

# Polls CHECK until it succeeds; fails with the daemon's log tail on timeout, or at once if the daemon died.
wait_for() {
    local daemon=$1 logfile=$2 end=$((EPOCHSECONDS + TIMEOUT))
    shift 2
    until "$@"; do
        alive "$daemon" || {
            log_tail "$logfile"
            die "$daemon is not running (it exited during start-up; see the log above)"
        }
        if ((EPOCHSECONDS >= end)); then
            log_tail "$logfile"
            die "$daemon was not ready after ${TIMEOUT} s (raise SLURM_DEMO_TIMEOUT if the machine is just slow)"
        fi
        sleep 0.2
    done
}

# Daemons that fork write their own PID file; copy it once it names the daemon, so down.sh knows it is ours.
record_pidfile() {
    local name=$1 file=$2 pid end=$((EPOCHSECONDS + TIMEOUT))
    while :; do
        if [[ -s $file ]] && read -r pid <"$file" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
            echo "$pid" >"$DEMO_RUN/$name.pid"
            STARTED+=("$name")
            return
        fi
        ((EPOCHSECONDS < end)) || {
            log_tail "$SLURM_LOGS/$name.log"
            die "$name wrote no PID file $file within ${TIMEOUT} s"
        }
        sleep 0.05
    done
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# For a daemon we started, only that very process counts (another copy may run for someone else's experiment).
alive() {
    if [[ -e $DEMO_RUN/$1.pid ]]; then own_pid "$1" >/dev/null; else is_running "$1"; fi
}

# The name of the program listening on our slurmrestd port, if any. Other slurmrestd processes may serve other
# configs on other ports; only the one on our address matters.
port_owner() {
    ss -Hltnp "sport = :$REST_PORT" 2>/dev/null | grep -o '(("[^"]*"' | head -n 1 | tr -d '("' || true
}
restd_running() { [[ $(port_owner) == slurmrestd ]]; }

mariadb_up() { tcp_open 127.0.0.1 3306; }

# ---------------------------------------------------------------------------------------------------------------
install_packages() {
    # iproute2 for ss: it tells whose listener holds the slurmrestd port.
    local want=(munge slurmctld slurmd slurm-client slurmrestd slurm-wlm-jwt-plugin curl iproute2) missing=() p installed
    if ((ACCOUNTING)); then
        want+=(slurmdbd)
        command -v mariadb >/dev/null || want+=(mariadb-client-core)
        if ! mariadb_up && [[ ! -x /usr/sbin/mariadbd ]]; then want+=(mariadb-server); fi
    fi
    installed=$(dpkg-query -W -f='${Status} ${Package}\n' "${want[@]}" 2>/dev/null | awk '/ installed /{ print $4 }' || true)
    for p in "${want[@]}"; do
        grep -qx "$p" <<<"$installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0

    local t0=$EPOCHREALTIME own_policy=0
    # Without systemd, package scripts would try to start the daemons with the wrong config; a policy-rc.d that
    # says no keeps them down. An existing one belongs to the machine and is left as it is.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    log "installing ${missing[*]}"
    # Another session may hold the dpkg lock (an install in progress); wait for it rather than fail.
    apt-get -qq -o DPkg::Lock::Timeout=600 update
    DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
        "${missing[@]}" >/dev/null
    if ((own_policy)); then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    log "installed ${#missing[@]} packages ($(since "$t0") s)"
}

ensure_users() {
    local u
    getent passwd slurmrest >/dev/null ||
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin slurmrest
    # The console reads partitions and nodes as this unprivileged account, never as slurm or root.
    getent passwd clusterra >/dev/null ||
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin clusterra
    for u in $DEMO_USERS; do
        if ! getent passwd "$u" >/dev/null; then
            useradd -m -s /bin/bash "$u"
            log "created user $u"
        fi
    done
}

ensure_dirs() {
    install -d -m 0755 "$DEMO_RUN" "$SLURM_ETC"
    # The console writes the policy snapshot here; slurmctld (as slurm) only reads it.
    install -d -o root -g slurm -m 0750 "$POLICY_DIR"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o slurm -g slurm -m 0755 /run/slurm "$SLURM_LOGS"
    install -d -o slurm -g slurm -m 0755 "$CTLD_STATE" "$SLURMD_SPOOL"
}

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

ensure_secrets() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        (umask 077 && head -c 1024 /dev/urandom >/etc/munge/munge.key)
        chown munge:munge /etc/munge/munge.key
    fi
    # The key outlives every run: tokens minted by a running console must keep working across restarts.
    if [[ ! -s $JWT_KEY ]]; then
        (umask 077 && head -c 64 /dev/urandom >"$JWT_KEY.new")
        chown slurm:slurm "$JWT_KEY.new"
        mv "$JWT_KEY.new" "$JWT_KEY"
        log "created JWT key $JWT_KEY"
    fi
    # slurmctld and slurmdbd read it as SlurmUser; a key copied in by hand often comes owned by root.
    chown slurm:slurm "$JWT_KEY"
    chmod 0600 "$JWT_KEY"
    if ((ACCOUNTING)) && [[ ! -s $DB_PASS_FILE ]]; then
        (umask 077 && random_hex 24 >"$DB_PASS_FILE")
    fi
}

# ---------------------------------------------------------------------------------------------------------------
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
    log "wrote $file"
}

node_line() {
    local hw kv key val out="NodeName=$NODE NodeAddr=127.0.0.1"
    hw=$(slurmd -C 2>/dev/null | head -n 1) || true
    [[ $hw == NodeName=* ]] || die "'slurmd -C' did not describe this machine (got: '$hw')"
    for kv in $hw; do
        key=${kv%%=*} val=${kv#*=}
        case $key in
        CPUs | Boards | SocketsPerBoard | CoresPerSocket | ThreadsPerCore) out+=" $kv" ;;
        # Leave the OS some room: slurmd drains a node whose memory is below its configured RealMemory.
        RealMemory) out+=" RealMemory=$((val * 95 / 100))" ;;
        esac
    done
    ((FAKE_GPUS == 0)) || out+=" Gres=gpu:$FAKE_GPUS"
    # For the sbatch corpus's --constraint lines (tests/jobs/corpus); no job without one is affected.
    printf '%s Features=avx2,ssd State=UNKNOWN' "$out"
}

# Nodes that exist only on paper, for the `wide` partition: held jobs of the sbatch corpus (multi-node
# torchrun, typed GPUs, --constraint=a100) are accepted and stay pending, but never run. Their slurmd "port"
# has nobody listening, so slurmctld's pings are refused at once and the nodes stay DOWN.
readonly PAPER_NODES="NodeName=wide[1-4] NodeAddr=127.0.0.1 Port=6899 Sockets=2 CoresPerSocket=16 ThreadsPerCore=1 RealMemory=2000000 Gres=gpu:a100:4 Features=a100,ib,avx512 State=DOWN Reason=\"paper node, never starts\""

write_configs() {
    local storage=accounting_storage/none gather=jobacct_gather/none dbd_lines=""
    if ((ACCOUNTING)); then
        storage=accounting_storage/slurmdbd gather=jobacct_gather/linux
        dbd_lines=$'AccountingStorageHost=localhost\nAccountingStoragePort=6819'
        # Slurm's own limits as a second lock behind the plugin (access/limits.py sets them per person):
        # no association, no job; association limits apply; GPUs are a TRES they can name.
        dbd_lines+=$'\nAccountingStorageEnforce=associations,limits,qos,safe\nAccountingStorageTRES=gres/gpu'
    fi
    local node_def slurm_conf
    node_def=$(node_line)
    slurm_conf=$(
        cat <<EOF
# Written by clusterra scripts/slurm-up.sh; local edits are overwritten on the next run.
ClusterName=$CLUSTER
# 127.0.0.1 rather than the name: "localhost" may resolve to ::1, where nothing listens.
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthAltTypes=auth/jwt
# Only the console mints tokens (with the key, for minutes): nobody can ask slurmctld for a token of
# their own, nor renew one they hold (root and SlurmUser still can).
AuthAltParameters=jwt_key=$JWT_KEY,disable_token_creation
StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$SLURM_LOGS/slurmctld.log
SlurmdLogFile=$SLURM_LOGS/slurmd.log
# No systemd and no cgroups in containers and CI VMs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
# Without it slurmctld logs an error about a missing mail program.
MailProg=/bin/true
SchedulerType=sched/backfill
# Start jobs as soon as a CPU frees up; the default batch_sched_delay=3 starts about 2 jobs every 3 s.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# With CR_Core_Memory and no default, each job takes the whole node's memory and jobs run one at a time.
DefMemPerCPU=500
ReturnToService=2
MinJobAge=60
# Room for a 10,000-job benchmark queue (bench/) beside everyone else's jobs; the default is 10000.
MaxJobCount=50000
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
# Users see only their own jobs; root and SlurmUser still see all.
PrivateData=jobs
# The console's policy, enforced for every client (access/slurm/job_submit.lua, beside this file).
JobSubmitPlugins=lua
AccountingStorageType=$storage
${dbd_lines}
JobAcctGatherType=$gather
JobAcctGatherFrequency=30
GresTypes=gpu
# Before the real node: while "localhost" is the only node defined, Slurm answers every node name with it.
$PAPER_NODES
$node_def
PartitionName=cpu   Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu   Nodes=$NODE MaxTime=INFINITE State=UP
PartitionName=debug Nodes=$NODE MaxTime=00:30:00 DefaultTime=00:10:00 State=UP
PartitionName=wide  Nodes=$NODE,wide[1-4] MaxTime=2-00:00:00 DefaultTime=01:00:00 State=UP
# Site licenses the corpus's --licenses lines ask for; nothing else uses them.
Licenses=matlab:4,ansys:8
EOF
    )
    # An empty line where the accounting lines would be is harmless, but keep the file tidy.
    slurm_conf=$(grep -v '^$' <<<"$slurm_conf")

    local gres_conf i
    gres_conf=$'# Written by clusterra scripts/slurm-up.sh: fake GPUs, one File= per GPU (a Count alone drains the node).\nAutoDetect=off'
    for ((i = 0; i < FAKE_GPUS; i++)); do
        gres_conf+=$'\n'"NodeName=$NODE Name=gpu File=${GPU_DEVICES[i]}"
    done

    if write_if_changed "$SLURM_ETC/slurm.conf" 0644 root:root "$slurm_conf"; then SLURM_CHANGED=1; fi
    # slurmctld reloads the plugin by itself when the file's mtime moves: no restart for a new copy.
    write_if_changed "$SLURM_ETC/job_submit.lua" 0640 root:slurm "$(<"$PLUGIN_SOURCE")" || true
    # Refusals name people and their jobs: readable by slurm (which writes) and root (the console) only.
    if [[ ! -e $REFUSAL_LOG ]]; then
        install -o slurm -g slurm -m 0640 /dev/null "$REFUSAL_LOG"
    fi
    if write_if_changed "$SLURM_ETC/gres.conf" 0644 root:root "$gres_conf"; then SLURM_CHANGED=1; fi

    ((ACCOUNTING)) || return 0
    local db_pass dbd_conf
    db_pass=$(<"$DB_PASS_FILE")
    dbd_conf=$(
        cat <<EOF
# Written by clusterra scripts/slurm-up.sh; local edits are overwritten on the next run.
AuthType=auth/munge
# slurmrestd's /slurmdb calls reach slurmdbd with the user's JWT; without these they fail with error 1007.
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$JWT_KEY
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
LogFile=$SLURM_LOGS/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
# slurm.conf's PrivateData does not cover accounting: without this anyone reads everyone's job history.
PrivateData=jobs
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
EOF
    )
    # slurmdbd refuses a config readable by others (it holds the DB password).
    if write_if_changed "$SLURM_ETC/slurmdbd.conf" 0600 slurm:slurm "$dbd_conf"; then DBD_CHANGED=1; fi
}

# A changed config only takes effect on restart (slurmrestd reads slurm.conf only at start), so stop ours now and
# let the start sequence below bring them back. Daemons someone else runs are left alone, with a warning.
apply_config_changes() {
    local d
    if ((SLURM_CHANGED)); then
        for d in slurmd slurmctld; do
            if is_running "$d" && ! own_pid "$d" >/dev/null; then
                warn "$d was not started by this script; it keeps its old configuration until its owner restarts it"
            fi
        done
        if ! own_pid slurmrestd >/dev/null && restd_running; then
            warn "the slurmrestd on $LISTEN was not started by this script; it reads slurm.conf only at start"
        fi
        stop_own slurmrestd slurmd
        stop_own slurmctld
    fi
    if ((ACCOUNTING == 0)); then
        stop_own slurmdbd
    elif ((DBD_CHANGED)); then
        if is_running slurmdbd && ! own_pid slurmdbd >/dev/null; then
            warn "slurmdbd was not started by this script; it keeps its old configuration"
        fi
        stop_own slurmdbd
    fi
}

# ---------------------------------------------------------------------------------------------------------------
munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munged() {
    if ! is_running munged; then
        rm -f /run/munge/munged.pid
        runuser -u munge -- /usr/sbin/munged </dev/null >>"$SLURM_LOGS/munged.log" 2>&1 9>&-
        record_pidfile munged /run/munge/munged.pid
    fi
    wait_for munged /var/log/munge/munged.log munge_works
}

start_mariadb() {
    if mariadb_up; then return 0; fi
    # A socket without the TCP port means a MariaDB running with networking off: starting a second server on the
    # same datadir would corrupt it, so stop here.
    [[ ! -S /run/mysqld/mysqld.sock ]] || ! is_running mariadbd ||
        die "MariaDB is running but not listening on 127.0.0.1:3306, which slurmdbd needs"
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$SLURM_LOGS/mariadb.log" 2>&1 ||
            { log_tail "$SLURM_LOGS/mariadb.log"; die "mariadb-install-db failed"; }
    fi
    setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --bind-address=127.0.0.1 --port=3306 \
        --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mysqld.pid --innodb-lock-wait-timeout=900 \
        </dev/null >>"$SLURM_LOGS/mariadb.log" 2>&1 9>&- &
    echo $! >"$DEMO_RUN/mariadbd.pid"
    STARTED+=(mariadbd)
    wait_for mariadbd "$SLURM_LOGS/mariadb.log" mariadb_up
}

# The DB password is on no command line: SQL goes in on stdin.
db_root() {
    local sql
    sql=$(cat)
    mariadb -uroot <<<"$sql" 2>/dev/null || mariadb -uroot -h127.0.0.1 -P3306 --protocol=tcp <<<"$sql"
}

ensure_db_user() {
    local pass host sql=""
    pass=$(<"$DB_PASS_FILE")
    # Both hosts, because whether MariaDB sees a loopback TCP client as 'localhost' or '127.0.0.1' depends on its
    # name-resolution setting.
    for host in localhost 127.0.0.1; do
        sql+="CREATE USER IF NOT EXISTS 'slurm'@'$host' IDENTIFIED BY '$pass';"
        sql+="ALTER USER 'slurm'@'$host' IDENTIFIED BY '$pass';"
        sql+="GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurm'@'$host';"
    done
    db_root <<<"$sql" || die "could not create the MariaDB user 'slurm' (needs root access to MariaDB on 127.0.0.1:3306)"
}

# Each slurmdbd round trip costs about 180 ms here, so the readiness probe's answer is kept for the cluster check.
DB_CLUSTERS=""
sacctmgr_ready() { DB_CLUSTERS=$(sacctmgr -n -P list cluster format=cluster 2>/dev/null); }

start_slurmdbd() {
    if ! is_running slurmdbd; then
        ensure_db_user
        rm -f /run/slurm/slurmdbd.pid
        /usr/sbin/slurmdbd </dev/null >>"$SLURM_LOGS/slurmdbd.log" 2>&1 9>&-
        record_pidfile slurmdbd /run/slurm/slurmdbd.pid
    fi
    wait_for slurmdbd "$SLURM_LOGS/slurmdbd.log" sacctmgr_ready
    if ! grep -qx "$CLUSTER" <<<"$DB_CLUSTERS"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
        log "added cluster $CLUSTER to accounting"
    fi
}

ctld_ready() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_slurmctld() {
    if ! is_running slurmctld; then
        rm -f /run/slurm/slurmctld.pid
        /usr/sbin/slurmctld </dev/null >>"$SLURM_LOGS/slurmctld.log" 2>&1 9>&-
        record_pidfile slurmctld /run/slurm/slurmctld.pid
    elif ((SLURM_CHANGED)) && ! own_pid slurmctld >/dev/null; then
        scontrol reconfigure || warn "scontrol reconfigure failed"
    fi
    wait_for slurmctld "$SLURM_LOGS/slurmctld.log" ctld_ready
}

RESUMED=0
# Ready means the node takes jobs. A drain left over from an earlier config (e.g. a GPU count mismatch) is cleared
# once; if it comes back, the config is wrong and the wait times out with the log.
node_ready() {
    local state
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1)
    case $state in
    idle | mixed | allocated | completing) return 0 ;;
    drain* | down | inval | fail)
        if ((RESUMED == 0)); then
            log "node $NODE is $state; resuming it"
            scontrol update nodename="$NODE" state=resume || true
            RESUMED=1
        fi
        ;;
    esac
    return 1
}

start_slurmd() {
    if ! is_running slurmd; then
        rm -f /run/slurm/slurmd.pid
        /usr/sbin/slurmd -N "$NODE" </dev/null >>"$SLURM_LOGS/slurmd.log" 2>&1 9>&-
        record_pidfile slurmd /run/slurm/slurmd.pid
    fi
    wait_for slurmd "$SLURM_LOGS/slurmd.log" node_ready
}

ensure_associations() {
    local have u missing=()
    # One query answers both questions: the account's own association has an empty user.
    have=$(sacctmgr -n -P list assoc cluster="$CLUSTER" account="$CLUSTER" format=user)
    if [[ -z $have ]]; then
        sacctmgr -i add account "$CLUSTER" cluster="$CLUSTER" description="demo users" organization=demo >/dev/null
        log "added account $CLUSTER"
    fi
    # slurm too, so jobs submitted with a SlurmUser token are accounted to the demo account like the others.
    for u in $DEMO_USERS slurm; do
        grep -qx "$u" <<<"$have" || missing+=("$u")
    done
    ((${#missing[@]})) || return 0
    local IFS=,
    sacctmgr -i add user name="${missing[*]}" account="$CLUSTER" cluster="$CLUSTER" >/dev/null
    log "added associations for ${missing[*]} in account $CLUSTER"
}

TOKEN=""
TOKEN_AT=0
# The mint goes through slurmctld; one token (60 s) serves a whole wait, renewed before it can expire.
rest_get() {
    if [[ -z $TOKEN ]] || ((EPOCHSECONDS - TOKEN_AT > 40)); then
        TOKEN=$(scontrol token username=slurm lifespan=60 2>/dev/null) || return 1
        TOKEN=${TOKEN#SLURM_JWT=}
        TOKEN_AT=$EPOCHSECONDS
    fi
    # Headers come in on stdin so the token never shows up in ps.
    curl -sS -m 5 -H @- "$REST_URL$1" 2>/dev/null <<EOF
X-SLURM-USER-NAME: slurm
X-SLURM-USER-TOKEN: $TOKEN
EOF
}

rest_ready() {
    rest_get "/slurm/$API_VERSION/ping" | grep -Eq '"ping": *"UP"' || return 1
    ((ACCOUNTING == 0)) || rest_get "/slurmdb/$API_VERSION/clusters" | grep -Eq "\"name\": *\"$CLUSTER\""
}

start_slurmrestd() {
    local plugins=openapi/$API_VERSION
    ((ACCOUNTING == 0)) || plugins+=,openapi/db$API_VERSION
    local args="$plugins $LISTEN" owner
    owner=$(port_owner)
    if [[ -n $owner && $owner != slurmrestd ]]; then
        die "$owner already listens on port $REST_PORT; set SLURMRESTD_LISTEN to a free address"
    fi
    # Its plugins and address are fixed at start, so ours is restarted when they change.
    if own_pid slurmrestd >/dev/null && [[ $(cat "$DEMO_RUN/slurmrestd.args" 2>/dev/null) != "$args" ]]; then
        stop_own slurmrestd
    fi
    if ! restd_running; then
        # slurmrestd reads SLURMRESTD_LISTEN and friends itself, on top of its arguments, which would bind the
        # port twice; the arguments are the whole truth here.
        env -u SLURMRESTD_LISTEN -u SLURMRESTD_AUTH_TYPES -u SLURMRESTD_OPENAPI_PLUGINS SLURM_JWT=daemon \
            setsid /usr/sbin/slurmrestd -u slurmrest -g slurmrest -a rest_auth/jwt -s "$plugins" "$LISTEN" \
            </dev/null >>"$SLURM_LOGS/slurmrestd.log" 2>&1 9>&- &
        echo $! >"$DEMO_RUN/slurmrestd.pid"
        echo "$args" >"$DEMO_RUN/slurmrestd.args"
        STARTED+=(slurmrestd)
    fi
    wait_for slurmrestd "$SLURM_LOGS/slurmrestd.log" rest_ready
}

write_env() {
    local env_text
    env_text=$(
        cat <<EOF
SLURMRESTD_URL=$REST_URL
SLURM_API_VERSION=$API_VERSION
SLURM_JWT_KEY_FILE=$JWT_KEY
SLURM_CLUSTER=$CLUSTER
SLURM_PARTITIONS="cpu gpu debug wide"
SLURM_DEMO_USERS="$DEMO_USERS"
SLURM_ACCOUNTING=$ACCOUNTING
SLURM_RELEASE=22.05
SLURM_BIN=/usr/bin
SLURM_ROOT=/
SLURM_POLICY_FILE=$POLICY_DIR/policy.lua
SLURM_REFUSAL_LOG=$REFUSAL_LOG
EOF
    )
    write_if_changed "$DEMO_RUN/env" 0644 root:root "$env_text" >/dev/null || true
}

main() {
    require_root
    check_settings
    REST_HOST=${LISTEN%:*} REST_PORT=${LISTEN##*:}
    # A wildcard listen address is not something a client can connect to.
    [[ $REST_HOST != 0.0.0.0 ]] || REST_HOST=127.0.0.1
    REST_URL=http://$REST_HOST:$REST_PORT

    install -d -m 0755 "$DEMO_RUN"
    # Two runs at once (parallel CI jobs, make demo) would race on configs and PID files. Every daemon is started
    # with fd 9 closed: one that inherited it would hold this lock for its whole life.
    exec 9>"$DEMO_RUN/lock"
    flock -w 300 9 || die "another slurm-up/slurm-down run holds $DEMO_RUN/lock"
    local d
    # A PID file whose daemon died (crash, reboot, kill by hand) would make us wait on a process that is gone.
    for d in munged mariadbd slurmdbd slurmctld slurmd slurmrestd; do
        own_pid "$d" >/dev/null || rm -f "$DEMO_RUN/$d.pid"
    done

    install_packages
    ensure_users
    ensure_dirs
    ensure_secrets
    write_configs
    apply_config_changes

    start_munged
    if ((ACCOUNTING)); then
        start_mariadb
        start_slurmdbd
    fi
    start_slurmctld
    start_slurmd
    if ((ACCOUNTING)); then ensure_associations; fi
    start_slurmrestd
    write_env

    local started="nothing (all were running)"
    ((${#STARTED[@]} == 0)) || started="${STARTED[*]}"
    log "cluster '$CLUSTER' ready in $(since "$T_START") s; started: $started"
    log "  slurmrestd $REST_URL (auth/jwt, $API_VERSION), accounting: $( ((ACCOUNTING)) && echo on || echo off)"
    log "  partitions: cpu (default), gpu (fake GPUs: $FAKE_GPUS), debug (30 min max), wide (+4 paper nodes, DOWN);" \
        "users: ${DEMO_USERS:-none}"
    log "  settings for clients: $DEMO_RUN/env; logs: $SLURM_LOGS/"
}

main "$@"
