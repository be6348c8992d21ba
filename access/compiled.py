"""The policy in its compiled form: what one person may use on one cluster, and the whole cluster's snapshot.

`access.policy` decides from `access_of` and the quota statuses; `snapshot` compiles the same
two for every person the cluster knows into the data the head node's job_submit plugin reads.
One compiler for both doors, so the console and Slurm cannot disagree about a rule.

`Rules` is that compiler's input: a cluster's grants, quotas and the membership of the groups
holding them, read in three bulk queries whatever the number of people (or, for one person, in
their three filtered ones), and added up per person on demand (`Rules.of`). The snapshot walks it
for everyone; each console process keeps one per cluster in memory for its decisions (access.held).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from access.models import Grant, Quota, words
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


class GrantRule(NamedTuple):
    """One grant as the compiler needs it; the names match Grant's, so access_of takes either.

    Named tuples, not frozen dataclasses: a cluster's rules are ~20,000 of these, and a tuple is
    made several times faster, which is most of what a reload of the rules costs.
    """

    pk: int
    user_id: int | None
    group_id: int | None
    all_partitions: bool
    partition_names: tuple[str, ...]
    terminal: bool
    account_names: tuple[str, ...]
    qos_names: tuple[str, ...]


class QuotaRule(NamedTuple):
    """One quota's holder and limits; the names match Quota's, so access.quota's status_of takes either."""

    pk: int
    cluster_id: int
    user_id: int | None
    group_id: int | None
    group_name: str
    period: str
    period_anchor: date
    gpu_hours: float | None
    cpu_hours: float | None
    max_running_jobs: int | None
    max_queued_jobs: int | None
    max_nodes_per_job: int | None
    max_cpus_per_job: int | None
    max_gpus_per_job: int | None
    max_memory_per_job: int | None
    max_walltime: int | None

    @property
    def scope(self) -> str:
        return f"group {self.group_name}" if self.group_id else "you"

    @property
    def check_order(self) -> tuple[bool, str]:
        """The person's own quota first, then their groups' by group name (access.quota.applicable_quotas)."""
        return (self.group_id is not None, self.group_name if self.group_id else "")


QUOTA_FIELDS = tuple(name for name in QuotaRule._fields if name not in ("pk", "group_name"))


@dataclass(frozen=True)
class PersonRules:
    """What one person holds on one cluster: their grants and, in checking order, their quotas."""

    grants: tuple[GrantRule, ...]
    quotas: tuple[QuotaRule, ...]
    # access_of by the cluster's default account (the one thing of the cluster it reads).
    _access: dict[str, Access] = field(default_factory=dict, compare=False, repr=False)

    def access(self, cluster: Cluster) -> Access:
        found = self._access.get(cluster.slurm_account)
        if found is None:
            found = self._access[cluster.slurm_account] = access_of(list(self.grants), cluster)
        return found


class Rules:
    """A cluster's grants and quotas and who holds them, read in bulk; added up per person on demand.

    Immutable once built (the per-person results are memoised, each computed whole before it is
    stored), so threads may share one without a lock.
    """

    def __init__(
        self, grants: list[GrantRule], quotas: list[QuotaRule], members: dict[int, set[int]]
    ) -> None:
        self.grants = sorted(grants, key=lambda g: g.pk)
        self.quotas = sorted(quotas, key=lambda q: q.pk)
        self.members = members
        self._groups_of: dict[int, set[int]] = defaultdict(set)
        for group_id, users in members.items():
            for user_id in users:
                self._groups_of[user_id].add(group_id)
        self._grants_of: dict[tuple[str, int | None], list[GrantRule]] = defaultdict(list)
        for g in self.grants:
            self._grants_of[_holder(g)].append(g)
        self._quotas_of: dict[tuple[str, int | None], list[QuotaRule]] = defaultdict(list)
        for q in self.quotas:
            self._quotas_of[_holder(q)].append(q)
        self._people: dict[int, PersonRules] = {}

    @classmethod
    def load(cls, cluster: Cluster, person: Any = None) -> Rules:
        """Everyone's rules on the cluster (three queries), or only `person`'s (three small ones)."""
        grants = Grant.objects.filter(cluster=cluster)
        quotas = Quota.objects.filter(cluster=cluster)
        if person is not None:
            group_ids = list(person.groups.values_list("pk", flat=True))
            held = Q(user_id=person.pk) | Q(group_id__in=group_ids)
            grants, quotas = grants.filter(held), quotas.filter(held)
        grant_rows = grants.values_list(
            "pk", "user_id", "group_id", "all_partitions", "partitions", "terminal", "accounts", "qos"
        ).order_by()
        grant_rules = [
            GrantRule(
                pk=pk,
                user_id=user_id,
                group_id=group_id,
                all_partitions=all_partitions,
                partition_names=tuple(words(partitions)),
                terminal=terminal,
                account_names=tuple(words(accounts)),
                qos_names=tuple(words(qos)),
            )
            for pk, user_id, group_id, all_partitions, partitions, terminal, accounts, qos in grant_rows
        ]
        quota_rules = [
            QuotaRule(pk, *values[:3], group_name or "", *values[3:])
            for pk, group_name, *values in quotas.values_list("pk", "group__name", *QUOTA_FIELDS).order_by()
        ]
        members: dict[int, set[int]] = defaultdict(set)
        if person is not None:
            for group_id in group_ids:
                members[group_id].add(person.pk)
        else:
            holding = {g.group_id for g in grant_rules if g.group_id} | {
                q.group_id for q in quota_rules if q.group_id
            }
            rows = get_user_model().groups.through.objects.filter(group_id__in=holding)
            for user_id, group_id in rows.values_list("user_id", "group_id"):
                members[group_id].add(user_id)
        return cls(grant_rules, quota_rules, members)

    def of(self, user_id: int) -> PersonRules:
        """The person's own grant and quota and those of the groups they are in."""
        found = self._people.get(user_id)
        if found is not None:
            return found
        groups = self._groups_of.get(user_id, ())
        grants = [*self._grants_of.get(("user", user_id), ())]
        quotas = [*self._quotas_of.get(("user", user_id), ())]
        for group_id in groups:
            grants += self._grants_of.get(("group", group_id), ())
            quotas += self._quotas_of.get(("group", group_id), ())
        grants.sort(key=lambda g: g.pk)
        quotas.sort(key=lambda q: q.pk)
        quotas.sort(key=lambda q: q.check_order)
        found = self._people[user_id] = PersonRules(tuple(grants), tuple(quotas))
        return found

    def holders(self) -> set[int]:
        """Everyone holding a grant or a quota, themselves or through a group."""
        return (
            {g.user_id for g in self.grants if g.user_id}
            | {q.user_id for q in self.quotas if q.user_id}
            | {u for users in self.members.values() for u in users}
        )


def _holder(row: GrantRule | QuotaRule) -> tuple[str, int | None]:
    return ("user", row.user_id) if row.user_id else ("group", row.group_id)


def compile_cluster(cluster: Cluster, *, now: datetime | None = None) -> dict[str, Any]:
    """The snapshot's rules for every person with a Linux account the console made for this cluster.

    People without any grant are left out (the plugin refuses them with the no-grant sentence);
    deactivated people are listed as such, so they hear why. Quotas carry the use already
    settled in their period; the plugin adds what is queued, running or just ended.
    """
    now = now or timezone.now()
    rules = Rules.load(cluster)
    provisioned = set(
        ClusterAccount.objects.filter(cluster=cluster).values_list("account__user_id", flat=True)
    )
    accounts = {
        a.user_id: a
        for a in PosixAccount.objects.filter(
            Q(user_id__in=rules.holders()) | Q(user_id__in=provisioned)
        ).select_related("user")
    }

    quota_rows = {}
    for q in rules.quotas:
        if q.group_id:
            uids = sorted(accounts[u].uid for u in rules.members.get(q.group_id, ()) if u in accounts)
        else:
            uids = [accounts[q.user_id].uid] if q.user_id in accounts else []
        quota_rows[q.pk] = _quota_entry(status_of(q, now), uids)

    people = {}
    for user_id, account in sorted(accounts.items(), key=lambda item: item[1].uid):
        user = account.user
        if user is None:
            continue
        entry: dict[str, Any] = {"name": account.username, "console_name": user.get_username()}
        if not user.is_active:
            entry["inactive"] = True
            people[account.uid] = entry
            continue
        mine = rules.of(user_id)
        if not mine.grants:
            continue
        access = mine.access(cluster)
        entry |= {
            "all_partitions": access.all_partitions,
            "partitions": list(access.partitions),
            "accounts": list(access.accounts),
            "qos": list(access.qos),
            "quotas": [q.pk for q in mine.quotas],
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
