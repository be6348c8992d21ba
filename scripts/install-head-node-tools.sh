#!/usr/bin/env bash
# What a person expects at a shell on the demo's head node, which is this host for every release (its
# terminals are local PTYs here): a text editor for a newcomer (nano) and one for everyone else (vi).
# Debian packages, quiet, and nothing to do when both are there. Root on Debian only; elsewhere it says
# what is missing and leaves the machine alone.
set -euo pipefail
need=()
command -v nano >/dev/null 2>&1 || need+=(nano)
# vim-tiny provides vi; a full vim already installed provides it too.
command -v vi >/dev/null 2>&1 || need+=(vim-tiny)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-head-node-tools: missing ${need[*]}; shells on this host have no editor until they are installed" >&2
  exit 0
fi
echo "install-head-node-tools: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
  { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
