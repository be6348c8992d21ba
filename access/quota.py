"""Which quotas apply to a person, their periods, and how much of each is used, reserved and left.

How usage is counted (the rule the sentences and the admin rely on):

- A ledger entry (access.models.Usage) is charged to its person and to every group
  the person was in when it was written: the groups are kept on the entry. A group's
  quota is shared by its members together; a person's own quota is theirs alone. A
  person in two groups with quotas is therefore limited by both (and by their own):
  every applicable quota must have room, and the job is charged to all of them.
- Keeping the groups on the entry means membership changes do not rewrite history:
  someone who joins ml-team mid-month does not bring their earlier use along, and
  someone who leaves does not take the group's use away. A quota created or edited
  mid-period still sees everything already charged in that period.
- Open reservations (queued or running jobs) count against the current period
  whenever they were made. Settled use counts in the period the job ended in: a job
  that runs across midnight on the last day is charged, whole, to the new period.
- A job array is one entry: each of its tasks counts as a queued or running job, and
  the tasks that ended count at their real use, in the current period, until the whole
  array is settled (then in the period its last task ended in).
- Periods start at midnight in the console's time zone (TIME_ZONE): a day at every
  midnight, a week on the anchor's weekday, a month on the anchor's day of the month.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.contrib.auth.models import Group
from django.db.models import Count, Q, QuerySet, Sum, Value
from django.utils import timezone

from access.models import Quota, Usage
from clusters.models import Cluster
from prepared import Prepared, fields_of, instance

PERIOD_WORDS = {"day": "today", "week": "this week", "month": "this month"}


@dataclass(frozen=True)
class QuotaStatus:
    """One applicable quota as a person sees it: its limits and what is used, reserved and left."""

    scope: str
    period: str
    period_start: datetime
    renews: datetime
    gpu_hours_limit: float | None
    gpu_hours_used: float
    gpu_hours_reserved: float
    cpu_hours_limit: float | None
    cpu_hours_used: float
    cpu_hours_reserved: float
    max_running_jobs: int | None
    running_jobs: int
    max_queued_jobs: int | None
    queued_jobs: int
    max_nodes_per_job: int | None
    max_cpus_per_job: int | None
    max_gpus_per_job: int | None
    max_walltime: int | None
    quota_id: int | None = None
    max_memory_per_job: int | None = None

    @property
    def gpu_hours_left(self) -> float | None:
        return _left(self.gpu_hours_limit, self.gpu_hours_used, self.gpu_hours_reserved)

    @property
    def cpu_hours_left(self) -> float | None:
        return _left(self.cpu_hours_limit, self.cpu_hours_used, self.cpu_hours_reserved)

    @property
    def period_words(self) -> str:
        """'today', 'this week' or 'this month'."""
        return PERIOD_WORDS[self.period]

    @property
    def renews_words(self) -> str:
        """The renewal date as a person reads it: '1 December' (with the year when it is not this one)."""
        return date_words(self.renews)

    def as_json(self) -> dict[str, Any]:
        """The status as JSON values, for the API and the CLI."""
        data = asdict(self)
        data["period_start"] = self.period_start.isoformat()
        data["renews"] = self.renews.isoformat()
        data["gpu_hours_left"] = self.gpu_hours_left
        data["cpu_hours_left"] = self.cpu_hours_left
        for key in ("gpu_hours_used", "gpu_hours_reserved", "cpu_hours_used", "cpu_hours_reserved"):
            data[key] = round(data[key], 4)
        return data


def _left(limit: float | None, used: float, reserved: float) -> float | None:
    if limit is None:
        return None
    return round(max(0.0, limit - used - reserved), 6)


def held_by(person: Any) -> Q:
    """Rows (grants, quotas) held by the person or by one of their groups.

    The group ids are fetched first and passed as a list: given `person.groups.all()` as a
    subquery, PostgreSQL turns the OR into a filter over every row of the cluster, expects
    half of them to match and so hash-joins the whole user table for the names (~4 ms at
    10,000 rows); with literal ids, the (cluster, user) and (cluster, group) unique indexes
    answer it in a few index probes.
    """
    group_ids = list(person.groups.values_list("pk", flat=True))
    return Q(user_id=person.pk) | Q(group_id__in=group_ids)


def applicable_quotas(
    person: Any, cluster: Cluster, *, lock: bool = False, held: Q | None = None
) -> list[Quota]:
    """The person's own quota first, then their groups' by group name: the order checks run in.

    With `lock`, the rows are locked (SELECT … FOR UPDATE) in primary-key order, so two
    submits touching the same quotas queue behind each other instead of deadlocking.
    `held` is `held_by(person)` when the caller has it already (one query fewer).
    """
    rows = (
        Quota.objects.filter(cluster=cluster)
        .filter(held if held is not None else held_by(person))
        .select_related("group", "user", "cluster")
        .order_by("pk")
    )
    if lock:
        # Only the quota rows: the joined group and person rows are not ours to lock.
        rows = rows.select_for_update(of=("self",))
    return sorted(rows, key=lambda q: (q.group_id is not None, q.group.name if q.group_id else ""))


def period_bounds(period: str, anchor: date, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The start and end (the renewal) of the period `now` falls in, as aware datetimes."""
    tz = timezone.get_current_timezone()
    today = timezone.localtime(now or timezone.now(), tz).date()
    if period == Quota.Period.DAY:
        start = today
        end = today + timedelta(days=1)
    elif period == Quota.Period.WEEK:
        start = today - timedelta(days=(today.weekday() - anchor.weekday()) % 7)
        end = start + timedelta(days=7)
    elif period == Quota.Period.MONTH:
        day = min(anchor.day, 28)
        start = today.replace(day=day) if today.day >= day else _add_months(today.replace(day=day), -1)
        end = _add_months(start, 1)
    else:
        raise ValueError(f"unknown quota period {period!r}")
    return datetime.combine(start, time(), tzinfo=tz), datetime.combine(end, time(), tzinfo=tz)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return day.replace(year=index // 12, month=index % 12 + 1)


def date_words(moment: datetime, now: datetime | None = None) -> str:
    """'1 December', or '1 January 2027' when the year is not the current one."""
    local = timezone.localtime(moment)
    this_year = timezone.localtime(now or timezone.now()).year
    words = f"{local.day} {local:%B}"
    return words if local.year == this_year else f"{words} {local.year}"


def charged_to(quota: Any) -> QuerySet[Usage]:
    """The ledger entries charged to a quota's holder on its cluster."""
    return _charged(quota.cluster_id, quota.group_id or quota.user_id, is_group=bool(quota.group_id))


def _charged(cluster_id: int, holder_id: int, *, is_group: bool) -> QuerySet[Usage]:
    rows = Usage.objects.filter(cluster_id=cluster_id)
    return rows.filter(groups=holder_id) if is_group else rows.filter(user_id=holder_id)


def status_of(quota: Any, now: datetime | None = None) -> QuotaStatus:
    """One quota's current period: limits, use, open reservations and job counts, in one query.

    `quota` is a Quota or anything with its field names (access.compiled.QuotaRule).
    """
    return statuses_of([quota], now)[0]


def statuses_of(quotas: Sequence[Any], now: datetime | None = None) -> list[QuotaStatus]:
    """status_of for several quotas of one cluster, all in one query (none for no quota)."""
    if not quotas:
        return []
    now = now or timezone.now()
    bounds = [period_bounds(q.period, q.period_anchor, now) for q in quotas]
    values: list[Any] = []
    for quota, (start, end) in zip(quotas, bounds, strict=True):
        values += [quota.cluster_id, quota.group_id or quota.user_id, start, end]
    rows = _use_query(tuple(bool(q.group_id) for q in quotas)).rows(*values)
    by_index = {row["index"]: row for row in rows}
    empty = {"running": 0, "queued": 0}
    found = [by_index.get(i, empty) for i in range(len(quotas))]
    return [
        QuotaStatus(
            scope=quota.scope,
            period=quota.period,
            period_start=start,
            renews=end,
            gpu_hours_limit=quota.gpu_hours,
            gpu_hours_used=sums.get("gpu_used") or 0.0,
            gpu_hours_reserved=sums.get("gpu_reserved") or 0.0,
            cpu_hours_limit=quota.cpu_hours,
            cpu_hours_used=sums.get("cpu_used") or 0.0,
            cpu_hours_reserved=sums.get("cpu_reserved") or 0.0,
            max_running_jobs=quota.max_running_jobs,
            running_jobs=sums["running"] + (sums.get("array_running") or 0),
            max_queued_jobs=quota.max_queued_jobs,
            queued_jobs=sums["queued"] + (sums.get("array_queued") or 0),
            max_nodes_per_job=quota.max_nodes_per_job,
            max_cpus_per_job=quota.max_cpus_per_job,
            max_gpus_per_job=quota.max_gpus_per_job,
            max_walltime=quota.max_walltime,
            quota_id=quota.pk,
            max_memory_per_job=quota.max_memory_per_job,
        )
        for quota, (start, end), sums in zip(quotas, bounds, found, strict=True)
    ]


# The use query of each shape of quota list (which of them are a group's), compiled once: building and
# compiling it through the ORM was a quarter of a submit's CPU. Few shapes occur (a person's own quota
# and their groups'); the least used past SHAPES_KEPT is compiled again when it comes back.
SHAPES_KEPT = 64


@functools.lru_cache(maxsize=SHAPES_KEPT)
def _use_query(groups: tuple[bool, ...]) -> Prepared:
    return Prepared(functools.partial(_use_of, groups), *(int, int, datetime, datetime) * len(groups))


def _use_of(groups: tuple[bool, ...], *values: Any) -> QuerySet:
    """Per quota (cluster, holder, period start, period end in `values`): its counts and sums."""
    is_open = Q(state__in=Usage.OPEN)
    # A job array is one entry: its tasks count as the jobs they are, and the tasks that already ended
    # count at their real use while the others are still reserved (access.ledger.task_ended).
    single = Q(tasks__lte=1)
    open_array = is_open & Q(tasks__gt=1)
    # One aggregate per quota, each as fast as alone (its own index: the person's entries, or the
    # group's through the entry-group table), glued with UNION ALL into one round trip. A quota
    # with nothing charged has no row: zero then, as aggregate() would say.
    parts = []
    for i, is_group in enumerate(groups):
        cluster_id, holder_id, start, end = values[4 * i : 4 * i + 4]
        used_now = Q(state=Usage.State.SETTLED, ended_at__gte=start, ended_at__lt=end) | open_array
        parts.append(
            _charged(cluster_id, holder_id, is_group=is_group)
            .filter(is_open | used_now)
            .order_by()
            .annotate(index=Value(i))
            .values("index")
            .annotate(
                running=Count("id", filter=Q(state=Usage.State.RUNNING) & single),
                queued=Count("id", filter=Q(state=Usage.State.QUEUED) & single),
                array_running=Sum("tasks_running", filter=open_array),
                array_queued=Sum("tasks_queued", filter=open_array),
                gpu_reserved=Sum("reserved_gpu_hours", filter=is_open),
                cpu_reserved=Sum("reserved_cpu_hours", filter=is_open),
                gpu_used=Sum("used_gpu_hours", filter=used_now),
                cpu_used=Sum("used_cpu_hours", filter=used_now),
            )
        )
    return parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]


def locked_quotas(ids: Sequence[int]) -> list[Quota]:
    """These quotas, read afresh and locked (SELECT … FOR UPDATE) in primary-key order, in checking order.

    The locking half of applicable_quotas(lock=True), for a caller that knows which quotas apply.
    """
    ids = sorted(set(ids))
    if not ids:
        return []
    quotas = []
    for row in _locking(len(ids)).rows(*ids):
        quota = instance(Quota, row)
        if quota.group_id:
            quota.group = Group(pk=quota.group_id, name=row["group__name"])
        quotas.append(quota)
    return sorted(quotas, key=lambda q: (q.group_id is not None, q.group.name if q.group_id else ""))


# Every reservation locks its quotas: that query compiled once per number of quotas.
@functools.lru_cache(maxsize=SHAPES_KEPT)
def _locking(count: int) -> Prepared:
    return Prepared(_locked_rows, *(int,) * count)


def _locked_rows(*ids: int) -> QuerySet:
    # Only the quota rows are locked; the group is joined for its name (the quota's scope).
    rows = Quota.objects.filter(pk__in=ids).order_by("pk").select_for_update(of=("self",))
    return rows.values(*fields_of(Quota), "group__name")
