#!/usr/bin/env bash
# Installs the Debian packages the console itself needs (Slurm's own come from slurm-up.sh).
# As a non-root user it only says what is missing: the Python parts still install, and the
# tests that need a missing part skip with a one-line reason (CI fails instead).
set -euo pipefail

need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv python3-pip)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system: missing ${need[*]} (install them, or run as root on Debian/Ubuntu)" >&2
  exit 0
fi
echo "install-system: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
