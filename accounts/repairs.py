"""Repairs of accounts the console made before a rule existed, run by `manage.py reconcile_accounts`.

Provisioning makes new accounts right (accounts.provisioning); these bring older ones in line, one
head-node call per cluster to find what needs it, each change audited.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from accounts import posix
from accounts.provisioning import STEP_TIMEOUT, ProvisioningError
from audit.log import record
from clusters import headnode
from clusters.models import Cluster

# find's answer: "<mode> <name>" for each folder right under home_root that group or others may open.
# With -H a home_root that is a symbolic link (/home → /data/home) is followed; nothing under it is.
_OPEN_FOLDERS = ("-mindepth", "1", "-maxdepth", "1", "-type", "d", "-perm", "/077", "-printf", "%m %f\\n")


@dataclass(frozen=True)
class HomeFix:
    """A console account's home that group or others could open, and whether it is 0700 now."""

    username: str
    home: str
    mode: str
    error: str = ""


def close_open_homes(cluster: Cluster, usernames: Collection[str], *, actor: Any = None) -> list[HomeFix]:
    """Make 0700 the homes (home_root/<name>) of these console accounts that group or others can open.

    One `find` lists every open folder under home_root at once, so the check costs one head-node call
    per cluster, not one per account; folders of names that are not the console's are left alone.
    Each change is audited. Raises HeadNodeError, or ProvisioningError when the folders cannot be listed.
    """
    if not usernames:
        return []
    root = cluster.home_root
    listed = headnode.run(cluster, ["find", "-H", root, *_OPEN_FOLDERS], timeout=STEP_TIMEOUT)
    if not listed.ok:
        raise ProvisioningError(
            f"the homes under {root} could not be listed: {listed.output() or listed.exit_code}",
            code="find_failed",
            cluster=cluster,
        )
    fixes = []
    for line in listed.stdout.splitlines():
        mode, _, name = line.partition(" ")
        if name not in usernames:
            continue
        home = posixpath.join(root, name)
        done = headnode.run(cluster, ["chmod", "0700", "--", home], timeout=STEP_TIMEOUT)
        fix = HomeFix(name, home, mode, "" if done.ok else done.output() or f"chmod exited {done.exit_code}")
        record(
            "provisioning.home",
            actor=actor,
            cluster=cluster,
            target=name,
            outcome="allowed" if done.ok else "error",
            reason="" if done.ok else "chmod_failed",
            message=f"The home {home} was open to others (mode {mode}); "
            + ("it is 0700 now." if done.ok else f"it could not be made 0700: {fix.error}"),
            details={"home": home, "mode": mode},
        )
        fixes.append(fix)
    return fixes


def join_people_group(cluster: Cluster, usernames: Collection[str], *, actor: Any = None) -> list[str]:
    """Put into posix.PEOPLE_GROUP the console's accounts on a local cluster that are not in it yet.

    Accounts made before the group existed (it closes the console host's service sockets to them);
    one `getent` per cluster, then one `usermod` per missing name, each audited. Returns who joined.
    Raises HeadNodeError, or ProvisioningError when the group cannot be made or joined.
    """
    if cluster.transport != Cluster.Transport.LOCAL or not usernames:
        return []
    group = posix.PEOPLE_GROUP
    listed = headnode.run(cluster, ["getent", "group", group], timeout=STEP_TIMEOUT)
    # "clusterra-people:x:999:ana,bo" — the members are the fourth field.
    fields = listed.stdout.strip().split(":") if listed.ok else []
    members = set(fields[3].split(",")) if len(fields) > 3 else set()
    if not listed.ok:
        made = headnode.run(cluster, ["groupadd", "--system", "-f", group], timeout=STEP_TIMEOUT)
        if not made.ok:
            raise ProvisioningError(
                f"the group {group} could not be made: {made.output() or made.exit_code}",
                code="people_group_failed",
                cluster=cluster,
            )
    joined = []
    for name in sorted(set(usernames) - members):
        done = headnode.run(cluster, ["usermod", "-a", "-G", group, name], timeout=STEP_TIMEOUT)
        if not done.ok:
            raise ProvisioningError(
                f"{name} could not join {group}: {done.output() or done.exit_code}",
                code="people_group_failed",
                cluster=cluster,
            )
        record(
            "provisioning.people_group",
            actor=actor,
            cluster=cluster,
            target=name,
            message=f"{name} joined {group}, which this host's service sockets refuse.",
        )
        joined.append(name)
    return joined
