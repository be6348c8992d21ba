"""Slurm's own limits, set from the policy: the second lock behind the job_submit plugin.

If the plugin were ever bypassed (removed from slurm.conf by mistake, a broken upgrade), slurmdbd's
associations still hold what they can express of the policy, with
`AccountingStorageEnforce=associations,limits,qos,safe` on the cluster:

- **Partitions.** One association per granted partition (and per Slurm account the grants allow);
  a grant of every partition is one association without a partition. An association without a
  partition grants every partition (docs/slurm-enforcement.md §3), so the one provisioning made
  is removed as soon as the grants name partitions.
- **Per job.** `MaxWall` is the tightest `max_walltime` of the quotas that apply, `MaxTRESPerJob`
  the tightest nodes, CPUs, GPUs and memory per job.
- **Jobs at once.** `MaxJobs` is the person's own `max_running_jobs`. A group's limit is shared by
  its members, which an association cannot say; the plugin holds those, and the budgets.
- **No grant.** Associations stay (they carry the person's history) with `MaxSubmitJobs=0`.
- An association that cannot be removed yet (jobs still run under it) gets `MaxSubmitJobs=0`
  and is removed in a later round.

The sync loop reconciles every person with a ready account on each cluster that enforces the
policy and has accounting, once when it starts and then whenever what they should have changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from access.compiled import access_of
from access.models import Grant
from access.quota import applicable_quotas, held_by
from accounts.models import ClusterAccount
from accounts.provisioning import ProvisioningError, slurm_cluster_name
from audit.log import record
from clusters import headnode
from clusters.models import Cluster

log = logging.getLogger("clusterra.access.limits")

SACCTMGR_TIMEOUT = 30
# What was last set for (cluster pk, user name): a digest of the associations and their limits.
_applied: dict[tuple[int, str], str] = {}


@dataclass(frozen=True)
class Wanted:
    """The associations one person should have on one cluster, and the limits on each."""

    associations: frozenset[tuple[str, str]]  # (account, partition); partition "" = every partition
    limits: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        text = json.dumps([sorted(self.associations), self.limits], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


class LimitsError(Exception):
    """sacctmgr did not do what was asked; the message says what and why."""


def wanted(person: Any, cluster: Cluster) -> Wanted:
    """What the person's grants and quotas come to in Slurm's terms."""
    grants = list(Grant.objects.filter(cluster=cluster).filter(held_by(person)))
    if not person.is_active or not grants:
        return Wanted(frozenset(), {"MaxSubmitJobs": "0"})
    granted = access_of(grants, cluster)
    partitions = [""] if granted.all_partitions else list(granted.partitions)
    if not partitions:
        return Wanted(frozenset(), {"MaxSubmitJobs": "0"})
    quotas = applicable_quotas(person, cluster)

    def tightest(name: str) -> int | None:
        values = [getattr(q, name) for q in quotas if getattr(q, name) is not None]
        return min(values) if values else None

    per_job = {
        "cpu": tightest("max_cpus_per_job"),
        "gres/gpu": tightest("max_gpus_per_job"),
        "mem": tightest("max_memory_per_job"),
        "node": tightest("max_nodes_per_job"),
    }
    own = [q for q in quotas if q.user_id == person.pk]
    running = own[0].max_running_jobs if own and own[0].max_running_jobs is not None else None
    walltime = tightest("max_walltime")
    limits = {
        "MaxWall": str(walltime) if walltime is not None else "-1",
        "MaxJobs": str(running) if running is not None else "-1",
        "MaxSubmitJobs": "-1",
        # -1 per TRES clears it; a TRES not named keeps whatever it had, so every one is named.
        "MaxTRESPerJob": ",".join(f"{k}={v if v is not None else -1}" for k, v in sorted(per_job.items())),
    }
    pairs = frozenset((account, partition) for account in granted.accounts for partition in partitions)
    return Wanted(pairs, limits)


def reconcile_cluster(cluster: Cluster) -> tuple[int, list[str]]:
    """Bring every ready account's associations on the cluster in line; (people changed, errors)."""
    if not (cluster.enforce_policy and cluster.has_accounting):
        return 0, []
    rows = ClusterAccount.objects.filter(cluster=cluster, state=ClusterAccount.State.READY).select_related(
        "account__user"
    )
    pending = []
    for row in rows:
        person = row.account.user
        if person is None or not person.is_active:
            continue  # offboarding blocks and removes a departed person's associations
        want = wanted(person, cluster)
        if _applied.get((cluster.pk, row.account.username)) != want.digest():
            pending.append((row.account.username, want))
    if not pending:
        return 0, []
    try:
        slurm_cluster = slurm_cluster_name(cluster)
    except (ProvisioningError, headnode.HeadNodeError) as e:
        return 0, [f"{cluster.slug}/limits: {e}"]
    changed, errors = 0, []
    for name, want in pending:
        try:
            if apply(cluster, slurm_cluster, name, want):
                changed += 1
                record(
                    "slurm.limits",
                    actor=None,
                    cluster=cluster,
                    target=name,
                    message=f"Slurm associations of {name} on {cluster.name} set from the policy: "
                    f"{_describe(want)}.",
                    details={"associations": sorted(want.associations), "limits": want.limits},
                )
            _applied[(cluster.pk, name)] = want.digest()
        except (LimitsError, headnode.HeadNodeError) as e:
            log.warning("limits of %s on %s: %s", name, cluster.slug, e)
            errors.append(f"{cluster.slug}/{name}/limits: {e}")
    return changed, errors


def apply(cluster: Cluster, slurm_cluster: str, name: str, want: Wanted) -> bool:
    """Add, limit and remove `name`'s associations on the head node; True if sacctmgr was asked anything."""
    have = existing(cluster, slurm_cluster, name)
    if not want.associations:
        # No grant: the associations keep the person's history and take no new jobs.
        for account, partition in sorted(have):
            _set(cluster, slurm_cluster, name, account, partition, want.limits)
        return bool(have)
    asked = False
    for account, partition in sorted(want.associations - have):
        _add(cluster, slurm_cluster, name, account, partition)
        asked = True
    for account, partition in sorted(want.associations):
        _set(cluster, slurm_cluster, name, account, partition, want.limits)
        asked = True
    for account, partition in sorted(have - want.associations):
        where = _where(slurm_cluster, name, account, partition)
        delete = ["sacctmgr", "-i", "delete", "user", "where", *where]
        removed = headnode.run(cluster, delete, timeout=SACCTMGR_TIMEOUT)
        if not removed.ok and "default account" in removed.output():
            # Slurm 24.11 and 26.05 refuse to remove the association that holds the user's default account
            # (the first one made: provisioning's, without a partition) while any other remains ("You can
            # not remove the default account of a user"); 22.05 removed it and kept the partition ones.
            # Removing all of them at once is allowed; the wanted ones are then made again, the first of
            # them the default. Between the two, Slurm takes no job of theirs: it fails closed.
            all_of_them = [f"name={name}", f"cluster={slurm_cluster}"]
            removed = headnode.run(
                cluster, ["sacctmgr", "-i", "delete", "user", "where", *all_of_them], timeout=SACCTMGR_TIMEOUT
            )
            if removed.ok:
                _add_again(cluster, slurm_cluster, name, want)
                return True
        if not removed.ok:
            # Jobs still run under it (sacctmgr refuses): block it now, remove it in a later round.
            _set(cluster, slurm_cluster, name, account, partition, {"MaxSubmitJobs": "0"})
            raise LimitsError(
                f"the association {account}/{partition or 'every partition'} of {name} still has jobs; "
                "it takes no new ones and is removed once they end"
            )
        asked = True
    return asked


def _add(cluster: Cluster, slurm_cluster: str, name: str, account: str, partition: str) -> None:
    argv = ["sacctmgr", "-i", "add", "user", name, f"account={account}", f"cluster={slurm_cluster}"]
    if partition:
        argv.append(f"partition={partition}")
    _sacctmgr(cluster, argv, f"add the association {account}/{partition or 'every partition'}")


def _add_again(cluster: Cluster, slurm_cluster: str, name: str, want: Wanted) -> None:
    """The wanted associations made again after every one of `name`'s was removed, with their limits."""
    for account, partition in sorted(want.associations):
        _add(cluster, slurm_cluster, name, account, partition)
    for account, partition in sorted(want.associations):
        _set(cluster, slurm_cluster, name, account, partition, want.limits)


def existing(cluster: Cluster, slurm_cluster: str, name: str) -> frozenset[tuple[str, str]]:
    """(account, partition) of each association `name` has on the Slurm cluster."""
    show = ["sacctmgr", "-n", "-P", "show", "assoc", f"cluster={slurm_cluster}", f"user={name}"]
    shown = headnode.run(cluster, [*show, "format=account,partition"], timeout=SACCTMGR_TIMEOUT)
    if not shown.ok:
        raise LimitsError(f"sacctmgr could not list the associations of {name}: {shown.output()}")
    pairs = set()
    for line in shown.stdout.splitlines():
        account, _, partition = line.strip().partition("|")
        if account:
            pairs.add((account, partition))
    return frozenset(pairs)


def _set(cluster: Cluster, slurm_cluster: str, name: str, account: str, partition: str, limits: dict) -> None:
    where = _where(slurm_cluster, name, account, partition)
    settings = [f"{key}={value}" for key, value in sorted(limits.items())]
    modify = ["sacctmgr", "-i", "modify", "user", "where", *where, "set", *settings]
    result = headnode.run(cluster, modify, timeout=SACCTMGR_TIMEOUT)
    if not result.ok and "gres/gpu" in result.output() and "MaxTRESPerJob" in limits:
        # A cluster without AccountingStorageTRES=gres/gpu has no GPU TRES to limit: the plugin holds GPUs.
        tres = ",".join(t for t in limits["MaxTRESPerJob"].split(",") if not t.startswith("gres/gpu="))
        _set(cluster, slurm_cluster, name, account, partition, limits | {"MaxTRESPerJob": tres})
        return
    # "Nothing modified" (exit 1) when the limits are already so.
    if not result.ok and "Nothing modified" not in result.output():
        raise LimitsError(f"sacctmgr could not set {' '.join(settings)} for {name}: {result.output()}")


def _where(slurm_cluster: str, name: str, account: str, partition: str) -> list[str]:
    # partition= with nothing after it selects the association without a partition, and only it.
    return [f"name={name}", f"cluster={slurm_cluster}", f"account={account}", f"partition={partition}"]


def _sacctmgr(cluster: Cluster, argv: list[str], what: str) -> None:
    result = headnode.run(cluster, argv, timeout=SACCTMGR_TIMEOUT)
    if not result.ok and "Nothing new added" not in result.output():
        raise LimitsError(f"sacctmgr could not {what}: {result.output()}")


def _describe(want: Wanted) -> str:
    if not want.associations:
        return "no partition granted, no new jobs (MaxSubmitJobs=0)"
    places = ", ".join(f"{a}/{p or 'every partition'}" for a, p in sorted(want.associations))
    limits = ", ".join(f"{k}={v}" for k, v in sorted(want.limits.items()) if v not in ("-1",))
    return f"{places}; {limits}" if limits else places
