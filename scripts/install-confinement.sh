#!/usr/bin/env bash
# The tools `manage.py confine_shells` uses to close this host's services to people's shells and jobs:
# nftables (loopback ports by socket owner) and acl (service socket directories). Root on Debian only.
set -euo pipefail
need=()
[ -x /usr/sbin/nft ] || need+=(nftables)
[ -x /usr/bin/setfacl ] || need+=(acl)
[ ${#need[@]} -eq 0 ] && exit 0
echo "install-confinement: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
  { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
