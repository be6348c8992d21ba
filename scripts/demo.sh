#!/usr/bin/env bash
# `make demo`: the real local Slurm, the console on http://127.0.0.1:8000, until Ctrl-C.
# Ctrl-C stops only what this run started; a second run reuses what exists.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${CLUSTERRA_PORT:-8000}
# The demo's administrator signs in with a password; people will use the IdP or the demo signup.
export CLUSTERRA_LOCAL_LOGIN=${CLUSTERRA_LOCAL_LOGIN:-1}

if [ "$(id -u)" != 0 ]; then
  echo "make demo runs the real Slurm on this machine and needs root (sudo make demo)." >&2
  exit 1
fi

started_slurm=0
# Slurm that was already up before this run is someone else's: leave it running on Ctrl-C.
if ! command -v scontrol >/dev/null 2>&1 || ! scontrol ping 2>/dev/null | grep -q UP; then
  started_slurm=1
fi
bash scripts/slurm-up.sh
# shellcheck disable=SC1091
. /run/slurm-demo/env

$BIN/python manage.py migrate --no-input
$BIN/python manage.py collectstatic --no-input --verbosity 0
$BIN/python manage.py register_cluster demo --name "Demo cluster" --url "$SLURMRESTD_URL" \
  --api-version "$SLURM_API_VERSION" --key-file "$SLURM_JWT_KEY_FILE" --transport local \
  $([ "${SLURM_ACCOUNTING:-1}" = 1 ] || echo --no-accounting)
$BIN/python manage.py ensure_admin

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "Stopping the console..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$started_slurm" = 1 ]; then
    echo "Stopping the Slurm this demo started..."
    bash scripts/slurm-down.sh
  fi
  exit 0
}
trap stop INT TERM EXIT

$BIN/daphne -b 127.0.0.1 -p "$PORT" clusterra_site.asgi:application &
pids+=($!)
echo
echo "Clusterra is running on http://127.0.0.1:$PORT/  (Ctrl-C stops it)"
wait -n "${pids[@]}"
