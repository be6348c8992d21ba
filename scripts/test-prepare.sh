#!/usr/bin/env bash
# Brings up the real parts the suite talks to, where this machine can run them (root on Debian).
# Elsewhere it says which tests will skip; in CI (CI=true) the tests themselves fail on a missing part.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # The browser tests drive Debian's Chromium; Playwright never downloads a browser of its own.
  if [ ! -x /usr/bin/chromium ]; then
    echo "test-prepare: installing chromium for the browser tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  fi
  # The job_submit plugin's own tests run it in the Lua that Debian's slurmctld links (5.1).
  if [ ! -x /usr/bin/lua5.1 ]; then
    echo "test-prepare: installing lua5.1 for the job_submit plugin's tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends lua5.1 >/dev/null ||
      { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends lua5.1 >/dev/null; }
  fi
  # The deploy tests (tests/deploy/) put Debian's nginx in front of the console, with a configuration and a
  # pid file of their own. The package would start the stock site on :80 at once (under systemd, or by its
  # init script elsewhere): a policy-rc.d that refuses every start keeps it off, unless one is there already.
  if [ ! -x /usr/sbin/nginx ]; then
    echo "test-prepare: installing nginx for the deploy tests"
    export DEBIAN_FRONTEND=noninteractive
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy_added=1
    fi
    failed=0
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends nginx >/dev/null ||
      { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends nginx >/dev/null; } ||
      failed=1
    [ "$policy_added" = 0 ] || rm -f /usr/sbin/policy-rc.d
    [ "$failed" = 0 ] || { echo "test-prepare: nginx did not install" >&2; exit 1; }
  fi
  bash scripts/install-confinement.sh
  # The same editors as on the demo's head node (this host): the terminal tests open them in a person's shell.
  bash scripts/install-head-node-tools.sh
  bash scripts/slurm-up.sh
  # The live tests marked every_release also run on Slurm 24.11 and 26.05, each in a debootstrap chroot
  # cached under /var/cache/clusterra (about 35 s each the first time, under a second after). Without
  # the Debian archive they cannot be built: in CI that fails the run, elsewhere those tests skip.
  for release in 24.11 26.05; do
    if ! SLURM_RELEASE=$release bash scripts/slurm-up.sh; then
      [ "${CI:-}" = true ] && { echo "test-prepare: Slurm $release did not start" >&2; exit 1; }
      echo "test-prepare: Slurm $release did not start: its tests will skip"
    fi
  done
else
  echo "test-prepare: not root on Debian/Ubuntu: the real-Slurm tests will skip (run scripts/slurm-up.sh as root)"
fi
