"""Row 5, policy: decide and reserve with 10,000 grants and quotas in the database, against one ORM read.

The population: `people` other people, each with a grant and a quota on the cluster and two
settled ledger entries this period, in 100 groups that have a grant and a quota of their own;
the bench person is in one of those groups, so a decision looks at their own quota and their
group's, as most real decisions would. Rows are made with bulk_create (no per-row history), which
is what the tables hold either way.

Measured in this process, one call at a time, turn by turn so drift hits all alike:
- decide(job.submit): grants, both quotas' usage sums and the sentence (it writes nothing), from the
  policy this process holds in memory (access.held);
- ledger.reserve: the same with the version checked, the quota rows locked and read with their use, and
  the ledger entry written, rolled back each time;
- the floor: one single-row ORM query, `Grant.objects.get(cluster=…, user=…)` (a unique, indexed row).
Then, after those:
- 5c, a refresh: the first decide after a rule change (what access.receivers does for any change:
  the cluster's version bumped, this process told), which loads the whole cluster's rules again;
  another process pays the same when its next version check finds the new number;
- decisions a second: decide alone, back to back for a second (info `decisions_per_second`; the goal
  is 5,000), printed under the row's progress line.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import timedelta
from typing import Any

from bench.stats import Measurement, Row, Series

GROUPS = 100
ENTRIES_PER_PERSON = 2
# Rule changes timed for 5c: each reloads the whole cluster's rules.
REFRESHES = 10


def populate(cluster: Any, person: Any, people: int) -> dict[str, int]:
    from django.contrib.auth.models import Group
    from django.utils import timezone

    from access.models import Grant, Quota, Usage
    from accounts.models import User

    if Group.objects.filter(name="bench-group-000").exists():
        # A second attempt at the row (others' work landed in the first): the population is there.
        return _counts(cluster, people)
    rng = random.Random(8)
    groups = Group.objects.bulk_create([Group(name=f"bench-group-{i:03d}") for i in range(GROUPS)])
    users = User.objects.bulk_create(
        [User(username=f"p{i:05d}@bench.invalid", email=f"p{i:05d}@bench.invalid") for i in range(people)],
        batch_size=2000,
    )
    memberships = [
        User.groups.through(user_id=u.pk, group_id=groups[i % GROUPS].pk) for i, u in enumerate(users)
    ]
    User.groups.through.objects.bulk_create(memberships, batch_size=5000)
    person.groups.add(groups[0])
    Grant.objects.bulk_create(
        [Grant(cluster=cluster, user=u, partitions="cpu gpu") for u in users]
        + [Grant(cluster=cluster, group=g, partitions="cpu debug") for g in groups],
        batch_size=2000,
    )
    Quota.objects.bulk_create(
        [Quota(cluster=cluster, user=u, cpu_hours=500.0, gpu_hours=50.0, max_running_jobs=20) for u in users]
        + [Quota(cluster=cluster, group=g, cpu_hours=1_000_000.0, max_queued_jobs=100_000) for g in groups],
        batch_size=2000,
    )
    now = timezone.now()
    entries = []
    for u in users:
        for _ in range(ENTRIES_PER_PERSON):
            hours = rng.uniform(0.1, 5.0)
            entries.append(
                Usage(
                    cluster=cluster,
                    user=u,
                    username=u.username,
                    state=Usage.State.SETTLED,
                    partition="cpu",
                    time_limit=60,
                    elapsed_seconds=int(hours * 3600),
                    used_cpu_hours=hours,
                    ended_at=now - timedelta(hours=rng.uniform(0, 48)),
                    job_id=10_000_000 + len(entries),
                )
            )
    Usage.objects.bulk_create(entries, batch_size=5000)
    # Each entry is charged to the group its person was in, as the ledger would have written it.
    charged = [
        Usage.groups.through(usage_id=entry.pk, group_id=groups[index // ENTRIES_PER_PERSON % GROUPS].pk)
        for index, entry in enumerate(entries)
    ]
    Usage.groups.through.objects.bulk_create(charged, batch_size=5000)
    from django.db import connection

    with connection.cursor() as cursor:
        # Fresh statistics, as autovacuum would have them on a database that grew over months.
        cursor.execute("ANALYZE")
    return _counts(cluster, people)


def _counts(cluster: Any, people: int) -> dict[str, int]:
    from access.models import Grant, Quota, Usage

    return {
        "people": people,
        "groups": GROUPS,
        "grants": Grant.objects.filter(cluster=cluster).count(),
        "quotas": Quota.objects.filter(cluster=cluster).count(),
        "ledger_entries": Usage.objects.filter(cluster=cluster).count(),
    }


def run(cluster: Any, person: Any, *, people: int, seconds: float) -> Row:
    from django.db import transaction

    from access import ledger, policy
    from access.models import Grant
    from access.receivers import policy_changed

    started = time.perf_counter()
    info: dict[str, Any] = populate(cluster, person, people)
    info["populate_seconds"] = round(time.perf_counter() - started, 2)
    request = policy.Resources(partition="cpu", cpus=4, time_limit=60)

    def decide() -> None:
        decision = policy.decide(person, "job.submit", cluster, request)
        assert decision.allowed, decision.message

    def reserve() -> None:
        with transaction.atomic():
            decision = ledger.reserve(person, cluster, request)
            assert decision.allowed, decision.message
            transaction.set_rollback(True)

    def one_row() -> None:
        Grant.objects.get(cluster=cluster, user=person)

    calls = {"decide": decide, "reserve": reserve, "orm": one_row}
    series = {name: Series(name) for name in calls}
    for call in calls.values():
        call()  # warm: connections, query plans, imports
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for name, call in calls.items():
            begun = time.perf_counter()
            call()
            series[name].samples.append(time.perf_counter() - begun)
    floor = Series("one-row ORM query", series["orm"].samples)
    info["per_second"] = {
        name: round(len(s.samples) / sum(s.samples), 1) for name, s in series.items() if s.samples
    }

    refreshes = Series("decide after a rule change")
    for _ in range(REFRESHES):
        policy_changed([cluster.pk])
        begun = time.perf_counter()
        decide()
        refreshes.samples.append(time.perf_counter() - begun)
    decide()
    done, begun = 0, time.perf_counter()
    while time.perf_counter() - begun < 1.0:
        decide()
        done += 1
    info["decisions_per_second"] = round(done / (time.perf_counter() - begun))
    info["refresh_ms"] = refreshes.summary()
    print(
        f"bench: row 5: {info['decisions_per_second']:,} decisions a second (goal 5,000); "
        f"a refresh after a rule change {refreshes.median * 1000:.1f} ms (median of {refreshes.n})",
        file=sys.stderr,
        flush=True,
    )

    row = Row(5, "policy")
    row.measurements = [
        Measurement("5a", f"policy.decide(job.submit), {people:,} grants+quotas", series["decide"], floor),
        Measurement("5b", "ledger.reserve (rolled back)", series["reserve"], floor),
        Measurement("5c", "policy.decide after a rule change (reload)", refreshes, floor),
    ]
    row.info = info
    return row
