"""The policy in its compiled form: what one person may use on one cluster, and the whole cluster's snapshot.

`access.policy` decides from `access_of` and the quota statuses; `snapshot` compiles the same
two for every person the cluster knows into the data the head node's job_submit plugin reads.
One compiler for both doors, so the console and Slurm cannot disagree about a rule.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from access.models import Grant, Quota
from access.quota import QuotaStatus, status_of
from accounts.models import ClusterAccount, PosixAccount
from clusters.models import Cluster


@dataclass(frozen=True)
class Access:
    """What a person's grants on one cluster add up to."""

    granted: bool  # any grant at all
    all_partitions: bool
    partitions: tuple[str, ...]
    terminal: bool
    accounts: tuple[str, ...]  # the cluster's default account first, then those grants name
    qos: tuple[str, ...]


def access_of(grants: list[Grant], cluster: Cluster) -> Access:
    """Every grant a person holds on the cluster (their own and their groups'), added up."""
    extra_accounts = sorted({a for g in grants for a in g.account_names} - {cluster.slurm_account})
    return Access(
        granted=bool(grants),
        all_partitions=any(g.all_partitions for g in grants),
        partitions=tuple(sorted({p for g in grants for p in g.partition_names})),
        terminal=any(g.terminal for g in grants),
        accounts=(cluster.slurm_account, *extra_accounts),
        qos=tuple(sorted({q for g in grants for q in g.qos_names})),
    )


def compile_cluster(cluster: Cluster, *, now: datetime | None = None) -> dict[str, Any]:
    """The snapshot's rules for every person with a Linux account the console made for this cluster.

    People without any grant are left out (the plugin refuses them with the no-grant sentence);
    deactivated people are listed as such, so they hear why. Quotas carry the use already
    settled in their period; the plugin adds what is queued, running or just ended.
    """
    now = now or timezone.now()
    User = get_user_model()
    grants = list(Grant.objects.filter(cluster=cluster).order_by("pk"))
    quotas = list(Quota.objects.filter(cluster=cluster).select_related("group", "user").order_by("pk"))
    group_ids = {g.group_id for g in grants if g.group_id} | {q.group_id for q in quotas if q.group_id}
    members: dict[int, set[int]] = defaultdict(set)
    for user_id, group_id in User.groups.through.objects.filter(group_id__in=group_ids).values_list(
        "user_id", "group_id"
    ):
        members[group_id].add(user_id)
    holders = (
        {g.user_id for g in grants if g.user_id}
        | {q.user_id for q in quotas if q.user_id}
        | {u for gid in group_ids for u in members[gid]}
    )
    provisioned = set(
        ClusterAccount.objects.filter(cluster=cluster).values_list("account__user_id", flat=True)
    )
    accounts = {
        a.user_id: a
        for a in PosixAccount.objects.filter(
            Q(user_id__in=holders) | Q(user_id__in=provisioned)
        ).select_related("user")
    }
    groups_of: dict[int, set[int]] = defaultdict(set)
    for gid, users in members.items():
        for u in users:
            groups_of[u].add(gid)

    statuses = {q.pk: status_of(q, now) for q in quotas}
    quota_rows = {}
    for q in quotas:
        if q.group_id:
            uids = sorted(accounts[u].uid for u in members[q.group_id] if u in accounts)
        else:
            uids = [accounts[q.user_id].uid] if q.user_id in accounts else []
        quota_rows[q.pk] = _quota_entry(statuses[q.pk], uids)

    people = {}
    for user_id, account in sorted(accounts.items(), key=lambda item: item[1].uid):
        user = account.user
        if user is None:
            continue
        mine = [g for g in grants if g.user_id == user_id or g.group_id in groups_of[user_id]]
        entry: dict[str, Any] = {"name": account.username, "console_name": user.get_username()}
        if not user.is_active:
            entry["inactive"] = True
            people[account.uid] = entry
            continue
        if not mine:
            continue
        access = access_of(mine, cluster)
        held = [q for q in quotas if q.user_id == user_id or q.group_id in groups_of[user_id]]
        # The order access.quota.applicable_quotas checks in: their own first, then groups by name.
        held.sort(key=lambda q: (q.group_id is not None, q.group.name if q.group_id else ""))
        entry |= {
            "all_partitions": access.all_partitions,
            "partitions": list(access.partitions),
            "accounts": list(access.accounts),
            "qos": list(access.qos),
            "quotas": [q.pk for q in held],
        }
        people[account.uid] = entry
    return {"people": people, "quotas": quota_rows}


def _quota_entry(s: QuotaStatus, uids: list[int]) -> dict[str, Any]:
    return {
        "scope": s.scope,
        "members": uids,
        "max_nodes": s.max_nodes_per_job,
        "max_cpus": s.max_cpus_per_job,
        "max_gpus": s.max_gpus_per_job,
        "max_memory": s.max_memory_per_job,
        "max_walltime": s.max_walltime,
        "max_running": s.max_running_jobs,
        "max_queued": s.max_queued_jobs,
        "gpu_limit": s.gpu_hours_limit,
        "gpu_used": round(s.gpu_hours_used, 6),
        "cpu_limit": s.cpu_hours_limit,
        "cpu_used": round(s.cpu_hours_used, 6),
        "period_words": s.period_words,
        "renews_words": s.renews_words,
    }
