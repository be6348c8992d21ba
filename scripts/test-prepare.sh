#!/usr/bin/env bash
# Brings up the real parts the suite talks to, where this machine can run them (root on Debian).
# Elsewhere it says which tests will skip; in CI (CI=true) the tests themselves fail on a missing part.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  bash scripts/slurm-up.sh
else
  echo "test-prepare: not root on Debian/Ubuntu: the real-Slurm tests will skip (run scripts/slurm-up.sh as root)"
fi
