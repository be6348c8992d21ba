#!/usr/bin/env bash
# `make demo`: the real local Slurm, the console on http://127.0.0.1:8000 with its demo signup, until Ctrl-C.
# Ctrl-C stops only what this run started; a second run reuses what exists (data/, the admin, the Slurm).
# `make demo SLURM_RELEASE=26.05` (or 24.11) serves it on that release instead of the host's 22.05: its cluster
# runs in a chroot beside the host's (scripts/slurm-release.sh) and is registered under its own ClusterName.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${CLUSTERRA_PORT:-8000}
URL="http://127.0.0.1:$PORT"
# The demo's administrator signs in with a password; people use the IdP or the demo signup.
export CLUSTERRA_LOCAL_LOGIN=${CLUSTERRA_LOCAL_LOGIN:-1}
RELEASE=${SLURM_RELEASE:-22.05}
case $RELEASE in
22.05)
  ENV_FILE=/run/slurm-demo/env
  SCONTROL=scontrol
  ;;
24.11 | 26.05)
  ENV_FILE=/run/slurm-demo-$RELEASE/env
  SCONTROL=/run/slurm-$RELEASE/bin/scontrol
  ;;
*)
  echo "SLURM_RELEASE must be 22.05 (the default), 24.11 or 26.05, not '$RELEASE'." >&2
  exit 1
  ;;
esac
# slurm-up.sh and slurm-down.sh read it too.
export SLURM_RELEASE=$RELEASE

if [ "$(id -u)" != 0 ]; then
  echo "make demo runs the real Slurm on this machine and needs root (sudo make demo)." >&2
  exit 1
fi
# Before anything starts: a second `make demo` still running would otherwise fail only at the very end.
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "Port $PORT is already in use (another make demo?). Stop it, or pick another: CLUSTERRA_PORT=8001 make demo" >&2
  exit 1
fi

started_slurm=0
# Slurm that was already up before this run is someone else's: leave it running on Ctrl-C.
if ! command -v "$SCONTROL" >/dev/null 2>&1 || ! "$SCONTROL" ping 2>/dev/null | grep -q UP; then
  started_slurm=1
fi

pids=()
names=()
# shellcheck disable=SC2317  # reached through the traps below
stop() {
  local status=$1
  trap - INT TERM EXIT
  echo
  [ ${#pids[@]} = 0 ] || echo "Stopping the console..."
  # SIGINT first: the sync loop then releases its lock (on SQLite a killed loop's lock row
  # would keep the next run's loop waiting for a minute). Whatever still runs after 10 s is killed.
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for _ in $(seq 20); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$started_slurm" = 1 ]; then
    echo "Stopping the Slurm this demo started..."
    bash scripts/slurm-down.sh
  fi
  exit "$status"
}
# Ctrl-C is the normal way out (status 0); anything else that ends the script keeps its status.
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

bash scripts/slurm-up.sh
# shellcheck disable=SC1090
. "$ENV_FILE"
# Opens /demo/ on the cluster registered below: `demo` on 22.05, else the release's ClusterName (demo2605),
# so that people's accounts and jobs on one release are never taken for another's. Without a mail server
# (CLUSTERRA_EMAIL_HOST), sign-in links are printed in this terminal, in the web server's log.
export CLUSTERRA_DEMO_CLUSTER=${CLUSTERRA_DEMO_CLUSTER:-$SLURM_CLUSTER}
name="Demo cluster"
[ "$RELEASE" = 22.05 ] || name="Demo cluster (Slurm $RELEASE)"

$BIN/python manage.py migrate --no-input
$BIN/python manage.py collectstatic --no-input --verbosity 0
# slurmrestd's address, API version and JWT key, accounting, the release's commands, policy file and
# refusal log: all as slurm-up.sh wrote them for clients.
$BIN/python manage.py register_cluster "$CLUSTERRA_DEMO_CLUSTER" --name "$name" --slurm-env "$ENV_FILE" \
  --transport local --enforce-policy
$BIN/python manage.py seed_demo --cluster "$CLUSTERRA_DEMO_CLUSTER"
# This host is the demo's head node on every release (its terminals are local PTYs here): its shells get
# the editors a newcomer looks for, nano and vi, to write a job script in the terminal.
bash scripts/install-head-node-tools.sh
# Strangers get shells on this host: close its databases, Redis and the rest to them (and to their jobs),
# and hide other people's processes. Their own shells are capped by the cluster's shell limits.
bash scripts/install-confinement.sh
$BIN/python manage.py confine_shells --open-port "$PORT"
admin_login=$($BIN/python manage.py ensure_admin)

start() {
  local name=$1
  shift
  # Without job control bash starts background commands with SIGINT ignored; give it back,
  # so that the stop below (and Ctrl-C itself) can end them cleanly.
  (
    trap - INT
    exec "$@"
  ) &
  pids+=($!)
  names+=("$name")
}
# As a production worker runs (deploy/systemd/clusterra-web@.service), on a loopback port.
start "the web server" $BIN/uvicorn --host 127.0.0.1 --port "$PORT" --loop uvloop --http httptools --ws websockets-sansio \
  --ws-per-message-deflate false --lifespan off --no-access-log clusterra_site.asgi:application
# Job states and the usage ledger come from this loop; without it jobs would stay "pending" in the console.
start "the job sync loop" $BIN/python manage.py sync_jobs
start "the demo expiry loop" $BIN/python manage.py expire_demo_accounts --every 3600

# Say where to go only once the server answers, so the first click works.
for _ in $(seq 60); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || break
  sleep 0.5
done
mail="sign-in links go out by mail through ${CLUSTERRA_EMAIL_HOST:-}"
[ -n "${CLUSTERRA_EMAIL_HOST:-}" ] || mail="no mail server is set: sign-in links are printed in this log"
cat <<EOF

Clusterra is running on $URL/  (Ctrl-C stops it)
  $admin_login
  Cluster $CLUSTERRA_DEMO_CLUSTER: Slurm $RELEASE, slurmrestd $SLURMRESTD_URL ($SLURM_API_VERSION)
  Try the demo: $URL/demo/  ($mail)

EOF

status=0
wait -n -p ended "${pids[@]}" || status=$?
for i in "${!pids[@]}"; do
  if [ "${pids[$i]}" = "${ended:-}" ]; then echo "${names[$i]} stopped (status $status); stopping the rest." >&2; fi
done
exit "$status"
