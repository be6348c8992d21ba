"""People who lost every grant on a cluster: their Linux account there is locked until a grant comes back.

On a cluster whose Slurm enforces the policy (the sync loop runs this only there), a grant withdrawn
or a group left closes their terminals at once (access.receivers) and their jobs go with the next
sync round (jobs.sync). This finishes it: the account itself is locked on the head node
(`usermod -L -e 1`), so nothing of theirs logs in there by any other way. It is not an offboarding:
the person stays active elsewhere, and a new grant unlocks the account (access.receivers).
"""

from __future__ import annotations

import logging

from access.models import Grant
from access.quota import held_by
from accounts import offboarding
from accounts.models import ClusterAccount
from clusters import headnode
from clusters.models import Cluster

log = logging.getLogger("clusterra.access.suspensions")


def suspend_ungranted(cluster: Cluster) -> tuple[int, list[str]]:
    """Lock every ready account on `cluster` whose (active) person holds no grant there; (locked, errors)."""
    rows = ClusterAccount.objects.filter(
        cluster=cluster, state=ClusterAccount.State.READY, account__user__is_active=True
    ).select_related("account__user", "cluster")
    locked, errors = 0, []
    for row in rows:
        person = row.account.user
        if Grant.objects.filter(cluster=cluster).filter(held_by(person)).exists():
            continue
        try:
            offboarding.suspend_on_cluster(row, by="policy")
            locked += 1
        except (headnode.HeadNodeError, RuntimeError) as e:
            log.warning("%s not locked on %s: %s", row.account.username, cluster.slug, e)
            errors.append(f"{cluster.slug}/{row.account.username}/suspend: {e}")
    return locked, errors
