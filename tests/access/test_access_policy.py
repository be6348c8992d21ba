"""access.policy.decide: every action, every denial and its exact sentence, periods, people in two groups."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from access import ledger, refusals
from access.ledger import reserve
from access.models import Grant, Quota, Usage
from access.policy import (
    ACTIONS,
    ALL_PARTITIONS,
    Resources,
    decide,
    granted_partitions,
    quota_status,
)
from accounts.models import PosixAccount, User
from audit.models import AuditEvent
from tests.conftest import require

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # a Friday


@pytest.fixture(autouse=True)
def frozen(monkeypatch):
    """The policy's clock (and auto_now fields) at NOW, so renewal dates are known."""
    clock = {"now": NOW}
    monkeypatch.setattr("django.utils.timezone.now", lambda: clock["now"])
    return clock


# `cluster` comes from tests/access/conftest.py; `ml_team` and `jane` here are this module's own.


@pytest.fixture
def ml_team(db) -> Group:
    return Group.objects.create(name="ml-team")


@pytest.fixture
def jane(ml_team) -> User:
    user = User.objects.create(username="jane", email="jane@corp.example")
    user.groups.add(ml_team)
    PosixAccount.objects.create(user=user, username="jane", uid=60101, gid=60101)
    return user


@pytest.fixture
def grant(cluster, ml_team) -> Grant:
    return Grant.objects.create(cluster=cluster, group=ml_team, partitions="cpu, gpu")


def quota(cluster, holder, **limits) -> Quota:
    key = "group" if isinstance(holder, Group) else "user"
    return Quota.objects.create(cluster=cluster, **{key: holder}, **limits)


def job(partition="gpu", **kw) -> Resources:
    return Resources(partition=partition, **kw)


def submit(person, cluster, request):
    return decide(person, "job.submit", cluster, request)


def refused(person, cluster, decision) -> AuditEvent:
    """The one event a door writes for `decision`, after checking that deciding itself wrote none."""
    assert not AuditEvent.objects.exists()
    refusals.record(person, cluster, decision)
    [event] = AuditEvent.objects.all()
    return event


# --- the decision table: every action against the conditions that apply to all of them ---------------


def call(action, person, cluster):
    if action == "job.submit":
        return decide(person, action, cluster, job("cpu"))
    if action == "job.cancel":
        return decide(person, action, cluster, job_owner="jane")
    return decide(person, action, cluster)


@pytest.mark.parametrize("action", ACTIONS)
def test_it_refuses_an_inactive_person_every_action(action, jane, cluster, grant):
    grant.terminal = True
    grant.save()
    jane.is_active = False
    jane.save()
    d = call(action, jane, cluster)
    assert (d.allowed, d.code) == (False, "inactive")
    assert d.message == (
        "Your account jane is deactivated, so you cannot use Cluster One; "
        "ask an administrator if this is a mistake."
    )


@pytest.mark.parametrize("action", ACTIONS)
def test_it_refuses_someone_not_signed_in(action, cluster, grant):
    d = call(action, AnonymousUser(), cluster)
    assert (d.allowed, d.code, d.message) == (
        False,
        "inactive",
        "You are not signed in; sign in to use Cluster One.",
    )
    assert refused(AnonymousUser(), cluster, d).actor_name == ""


@pytest.mark.parametrize("action", ACTIONS)
def test_it_refuses_everything_on_a_disabled_cluster(action, jane, cluster, grant):
    cluster.enabled = False
    cluster.save()
    d = call(action, jane, cluster)
    assert (d.allowed, d.code) == (False, "cluster_disabled")
    assert d.message == "Cluster One is turned off in the console; ask an administrator when it will be back."


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("cluster.view", "no_grant"),
        ("job.view", "no_grant"),
        ("job.submit", "no_grant"),
        ("terminal.open", "no_grant"),
        # Your own job stays yours after a grant is withdrawn.
        ("job.cancel", "ok"),
    ],
)
def test_without_a_grant(action, expected, jane, cluster):
    d = call(action, jane, cluster)
    assert d.code == expected
    if expected == "no_grant":
        assert d.message == "You have no access to Cluster One; ask an administrator for a grant."


@pytest.mark.parametrize(
    ("action", "expected", "message"),
    [
        ("cluster.view", "ok", "You may use Cluster One."),
        ("job.view", "ok", "You may view your jobs on Cluster One."),
        ("job.submit", "ok", "This job may run on partition cpu of Cluster One."),
        ("job.cancel", "ok", "You may cancel this job."),
        (
            "terminal.open",
            "terminal_not_granted",
            "Your access to Cluster One does not include the browser terminal; "
            "ask an administrator to allow it.",
        ),
    ],
)
def test_with_a_group_grant(action, expected, message, jane, cluster, grant):
    d = call(action, jane, cluster)
    assert (d.code, d.message) == (expected, message)
    assert d.allowed is (expected == "ok")


def test_a_grant_with_the_terminal_opens_it(jane, cluster, grant):
    grant.terminal = True
    grant.save()
    d = decide(jane, "terminal.open", cluster)
    assert (d.allowed, d.message) == (True, "You may open a terminal on Cluster One.")


def test_grants_add_up_across_the_person_and_their_groups(jane, cluster, grant):
    Grant.objects.create(cluster=cluster, user=jane, partitions="debug", terminal=True)
    assert granted_partitions(jane, cluster) == ["cpu", "debug", "gpu"]
    assert decide(jane, "terminal.open", cluster).allowed
    assert submit(jane, cluster, job("debug")).allowed


def test_it_refuses_a_partition_not_granted(jane, cluster, grant):
    d = submit(jane, cluster, job("debug"))
    assert (d.allowed, d.code) == (False, "partition_not_granted")
    assert d.message == "You may not submit to partition debug on Cluster One; your access allows cpu, gpu."
    assert d.facts["granted_partitions"] == ["cpu", "gpu"]


def test_it_asks_for_a_partition_when_none_is_named_and_not_all_are_granted(jane, cluster, grant):
    d = submit(jane, cluster, job(""))
    assert d.code == "partition_not_granted"
    assert d.message == "This job names no partition; your access allows cpu, gpu, so name one of them."


def test_a_grant_of_all_partitions_covers_any_partition(jane, cluster, grant):
    grant.all_partitions = True
    grant.save()
    assert submit(jane, cluster, job("brand-new")).allowed
    assert granted_partitions(jane, cluster) == [ALL_PARTITIONS]
    assert granted_partitions(jane, cluster, known=["gpu", "cpu"]) == ["cpu", "gpu"]


def test_granted_partitions_narrows_to_known_ones_and_is_empty_for_the_inactive(jane, cluster, grant):
    assert granted_partitions(jane, cluster, known=["gpu", "debug"]) == ["gpu"]
    jane.is_active = False
    assert granted_partitions(jane, cluster) == []


# --- one job: view and cancel -------------------------------------------------------------------------


def test_a_person_views_and_cancels_only_their_own_jobs(jane, cluster, grant):
    assert decide(jane, "job.view", cluster, job_owner="jane").allowed
    d = decide(jane, "job.view", cluster, job_owner="bob")
    assert (d.allowed, d.code, d.message) == (
        False,
        "not_your_job",
        "This job is not yours; you can view only your own jobs.",
    )
    d = decide(jane, "job.cancel", cluster, job_owner="bob")
    assert (d.code, d.message) == (
        "not_your_job",
        "This job is not yours; you can cancel only your own jobs.",
    )
    assert d.facts["job_owner"] == "bob"


def test_a_person_without_a_posix_account_owns_no_job(cluster, grant, ml_team):
    newcomer = User.objects.create(username="new")
    newcomer.groups.add(ml_team)
    assert decide(newcomer, "job.view", cluster, job_owner="new").code == "not_your_job"


def test_staff_view_every_job_and_cluster_but_cancel_only_their_own(cluster, db):
    boss = User.objects.create(username="boss", is_staff=True)
    assert decide(boss, "cluster.view", cluster).message == "Staff may view Cluster One."
    assert decide(boss, "job.view", cluster).message == "Staff may view every job on Cluster One."
    d = decide(boss, "job.view", cluster, job_owner="jane")
    assert (d.allowed, d.facts["as_staff"]) == (True, True)
    d = decide(boss, "job.cancel", cluster, job_owner="jane")
    assert (d.allowed, d.code) == (False, "not_your_job")
    assert d.message == (
        "This job is not yours; the console cancels only your own jobs, even for staff "
        "(an operator uses scancel on the cluster)."
    )
    # Staff submit and open terminals only with a grant, like anyone.
    assert decide(boss, "terminal.open", cluster).code == "no_grant"


def test_staff_still_see_a_disabled_cluster(cluster, db):
    boss = User.objects.create(username="boss", is_staff=True)
    cluster.enabled = False
    assert decide(boss, "cluster.view", cluster).allowed
    assert decide(boss, "job.submit", cluster, job()).code == "cluster_disabled"


def test_it_rejects_unknown_actions_and_missing_arguments(jane, cluster):
    with pytest.raises(ValueError, match="unknown action"):
        decide(jane, "job.delete", cluster)
    with pytest.raises(ValueError, match="Resources"):
        decide(jane, "job.submit", cluster)
    with pytest.raises(ValueError, match="job_owner"):
        decide(jane, "job.cancel", cluster)


def test_resources_refuse_negative_or_empty_counts():
    with pytest.raises(ValueError, match="gpus"):
        Resources("gpu", gpus=-1)
    with pytest.raises(ValueError, match="nodes"):
        Resources("gpu", nodes=0)
    assert Resources("gpu", cpus=4, gpus=2, time_limit=90).gpu_hours == 3.0
    assert Resources("gpu", cpus=4, gpus=2, time_limit=90).cpu_hours == 6.0


# --- each quota limit, with its sentence ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "request_", "code", "message"),
    [
        (
            {"max_nodes_per_job": 2},
            job(nodes=4),
            "max_nodes",
            "This job asks for 4 nodes; group ml-team's quota allows at most 2 nodes per job on Cluster One.",
        ),
        (
            {"max_cpus_per_job": 32},
            job(cpus=64),
            "max_cpus",
            "This job asks for 64 CPUs; group ml-team's quota allows at most 32 CPUs per job on Cluster One.",
        ),
        (
            {"max_gpus_per_job": 1},
            job(gpus=8),
            "max_gpus",
            "This job asks for 8 GPUs; group ml-team's quota allows at most 1 GPU per job on Cluster One.",
        ),
        (
            {"max_walltime": 120},
            job(time_limit=180),
            "max_walltime",
            "This job asks for 3 hours of walltime; group ml-team's quota allows at most 2 hours per job "
            "on Cluster One.",
        ),
        (
            {"max_walltime": 90},
            job(time_limit=100),
            "max_walltime",
            "This job asks for 100 minutes of walltime; group ml-team's quota allows at most 90 minutes "
            "per job on Cluster One.",
        ),
        (
            {"gpu_hours": 10},
            job(gpus=1),
            "walltime_required",
            "This job sets no time limit, and group ml-team's quota on Cluster One needs one to reserve "
            "GPU-hours; give the job a time limit.",
        ),
        (
            {"gpu_hours": 10},
            job(gpus=8, time_limit=120),
            "gpu_budget",
            "This job asks for 16.0 GPU-hours; group ml-team has 10.0 of 10.0 left this month, "
            "renewing on 1 December.",
        ),
        (
            {"cpu_hours": 100},
            job(cpus=64, time_limit=120),
            "cpu_budget",
            "This job asks for 128.0 CPU-hours; group ml-team has 100.0 of 100.0 left this month, "
            "renewing on 1 December.",
        ),
    ],
)
def test_each_limit_refuses_with_its_numbers(limits, request_, code, message, jane, cluster, grant, ml_team):
    q = quota(cluster, ml_team, **limits)
    d = submit(jane, cluster, request_)
    assert (d.allowed, d.code, d.message) == (False, code, message)
    assert d.facts["quota_id"] == q.pk
    assert d.facts["scope"] == "group ml-team"
    event = refused(jane, cluster, d)
    assert (event.outcome, event.reason, event.message, event.action) == (
        "denied",
        code,
        message,
        "job.submit",
    )
    assert event.details["quota_id"] == q.pk
    assert Usage.objects.count() == 0


def test_the_gpu_budget_sentence_counts_use_and_open_reservations(jane, cluster, grant, ml_team):
    quota(cluster, ml_team, gpu_hours=10)
    ledger.record_outside_use(
        jane, cluster, 901, elapsed_seconds=3 * 3600, cpus=2, gpus=1, ended=NOW - timedelta(days=2)
    )
    assert reserve(jane, cluster, job(gpus=1, time_limit=210)).allowed  # 3.5 GPU-hours held
    d = submit(jane, cluster, job(gpus=4, time_limit=120))
    assert d.code == "gpu_budget"
    assert d.message == (
        "This job asks for 8.0 GPU-hours; group ml-team has 3.5 of 10.0 "
        "left this month, renewing on 1 December."
    )
    assert (d.facts["used"], d.facts["reserved"], d.facts["left"], d.facts["asked"]) == (3.0, 3.5, 3.5, 8.0)
    assert d.facts["renews"] == "2026-12-01T00:00:00+00:00"
    assert json.loads(json.dumps(d.as_json()))["facts"]["left"] == 3.5
    [status] = quota_status(jane, cluster)
    shown = status.as_json()
    assert json.loads(json.dumps(shown)) == shown
    assert (shown["scope"], shown["gpu_hours_left"], shown["renews"]) == (
        "group ml-team",
        3.5,
        "2026-12-01T00:00:00+00:00",
    )


def test_a_job_that_exactly_fits_the_budget_is_allowed(jane, cluster, grant, ml_team):
    quota(cluster, ml_team, gpu_hours=10)
    d = submit(jane, cluster, job(gpus=5, time_limit=120))
    assert d.allowed
    assert d.message == (
        "This job may run on partition gpu of Cluster One; it asks for 10.0 GPU-hours and group ml-team "
        "has 10.0 of 10.0 left this month."
    )


def test_running_and_queued_limits_count_the_groups_jobs(jane, cluster, grant, ml_team):
    bob = User.objects.create(username="bob")
    bob.groups.add(ml_team)
    quota(cluster, ml_team, max_running_jobs=2, max_queued_jobs=3)
    first = reserve(jane, cluster, job()).reservation_id
    second = reserve(bob, cluster, job()).reservation_id
    ledger.started(first)
    ledger.started(second)
    d = submit(jane, cluster, job())
    assert (d.code, d.message) == (
        "max_running_jobs",
        "Group ml-team already has 2 of 2 allowed jobs running on Cluster One; wait for one to finish.",
    )
    assert d.facts["running_jobs"] == 2

    ledger.settle(first, elapsed_seconds=60, cpus=1, gpus=0)
    for _ in range(3):
        assert reserve(bob, cluster, job()).allowed
    d = submit(jane, cluster, job())
    assert (d.code, d.message) == (
        "max_queued_jobs",
        "Group ml-team already has 3 of 3 allowed jobs queued on Cluster One; wait for one to start.",
    )


def test_a_personal_quota_speaks_to_you_and_is_checked_first(jane, cluster, grant, ml_team):
    quota(cluster, ml_team, max_gpus_per_job=1)
    quota(cluster, jane, max_gpus_per_job=2, gpu_hours=4, period="week")
    d = submit(jane, cluster, job(gpus=4))
    assert d.message == "This job asks for 4 GPUs; your quota allows at most 2 GPUs per job on Cluster One."
    d = submit(jane, cluster, job(gpus=1, time_limit=300))
    # 20 November 2026 is a Friday; the default anchor (1 January 2024) is a Monday.
    assert d.message == (
        "This job asks for 5.0 GPU-hours; you have 4.0 of 4.0 left this week, renewing on 23 November."
    )


def test_checks_run_in_a_stable_order_and_the_first_failure_wins(jane, cluster, grant, ml_team):
    quota(cluster, ml_team, max_nodes_per_job=1, max_gpus_per_job=1, max_walltime=10, gpu_hours=1)
    d = submit(jane, cluster, job(nodes=2, gpus=2, time_limit=60))
    assert d.code == "max_nodes"
    assert submit(jane, cluster, job("debug", nodes=2)).code == "partition_not_granted"


# --- two groups --------------------------------------------------------------------------------------


def test_a_person_in_two_groups_is_limited_by_both_and_charged_to_both(jane, cluster, grant, ml_team):
    vision = Group.objects.create(name="vision")
    jane.groups.add(vision)
    quota(cluster, ml_team, gpu_hours=100)
    quota(cluster, vision, gpu_hours=3)
    d = submit(jane, cluster, job(gpus=2, time_limit=120))
    assert d.message == (
        "This job asks for 4.0 GPU-hours; group vision has 3.0 of 3.0 "
        "left this month, renewing on 1 December."
    )
    assert reserve(jane, cluster, job(gpus=1, time_limit=120)).allowed
    statuses = {s.scope: s for s in quota_status(jane, cluster)}
    assert statuses["group ml-team"].gpu_hours_reserved == 2.0
    assert statuses["group vision"].gpu_hours_reserved == 2.0
    assert statuses["group vision"].gpu_hours_left == 1.0


def test_a_group_quota_is_shared_and_history_stays_with_the_entry(jane, cluster, grant, ml_team):
    q = quota(cluster, ml_team, gpu_hours=10)
    bob = User.objects.create(username="bob")
    bob.groups.add(ml_team)
    ledger.record_outside_use(bob, cluster, 7, elapsed_seconds=3600 * 6, cpus=1, gpus=1, ended=NOW)
    assert quota_status(jane, cluster)[0].gpu_hours_used == 6.0
    # Leaving the group does not take the group's use away.
    bob.groups.remove(ml_team)
    [status] = quota_status(jane, cluster)
    assert (status.quota_id, status.gpu_hours_used, status.gpu_hours_left) == (q.pk, 6.0, 4.0)


# --- periods -----------------------------------------------------------------------------------------


def test_a_monthly_budget_renews_on_its_anchor_day(jane, cluster, grant, ml_team, frozen):
    quota(cluster, ml_team, gpu_hours=2, period="month", period_anchor=date(2024, 1, 15))
    d = submit(jane, cluster, job(gpus=1, time_limit=180))
    assert d.message == (
        "This job asks for 3.0 GPU-hours; group ml-team has 2.0 of 2.0 "
        "left this month, renewing on 15 December."
    )
    [status] = quota_status(jane, cluster)
    assert status.period_start == datetime(2026, 11, 15, tzinfo=UTC)


def test_use_of_the_last_period_no_longer_counts(jane, cluster, grant, ml_team, frozen):
    quota(cluster, ml_team, gpu_hours=10, period="month")
    ledger.record_outside_use(
        jane,
        cluster,
        1,
        elapsed_seconds=8 * 3600,
        cpus=1,
        gpus=1,
        ended=datetime(2026, 10, 31, 23, 59, tzinfo=UTC),
    )
    ledger.record_outside_use(
        jane,
        cluster,
        2,
        elapsed_seconds=1 * 3600,
        cpus=1,
        gpus=1,
        ended=datetime(2026, 11, 1, 0, 0, tzinfo=UTC),
    )
    [status] = quota_status(jane, cluster)
    assert (status.gpu_hours_used, status.gpu_hours_left) == (1.0, 9.0)

    frozen["now"] = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    assert quota_status(jane, cluster)[0].gpu_hours_used == 1.0
    frozen["now"] = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    assert quota_status(jane, cluster)[0].gpu_hours_used == 0.0
    assert quota_status(jane, cluster)[0].renews_words == "1 January 2027"


def test_an_open_reservation_counts_in_every_period_until_it_ends(jane, cluster, grant, ml_team, frozen):
    quota(cluster, ml_team, gpu_hours=10, period="day")
    rid = reserve(jane, cluster, job(gpus=1, time_limit=240)).reservation_id
    frozen["now"] = NOW + timedelta(days=1)
    d = submit(jane, cluster, job(gpus=1, time_limit=420))
    assert d.message == (
        "This job asks for 7.0 GPU-hours; group ml-team has 6.0 of 10.0 left today, renewing on 22 November."
    )
    # Settled use counts in the day the job ended, not the day it was submitted.
    ledger.settle(rid, elapsed_seconds=3600, cpus=1, gpus=1)
    assert quota_status(jane, cluster)[0].gpu_hours_used == 1.0
    frozen["now"] = NOW + timedelta(days=2)
    assert quota_status(jane, cluster)[0].gpu_hours_used == 0.0


def test_a_weekly_budget_starts_on_its_anchor_weekday(jane, cluster, grant, ml_team, frozen):
    # 4 November 2026 is a Wednesday: weeks run Wednesday to Wednesday.
    quota(cluster, ml_team, gpu_hours=1, period="week", period_anchor=date(2026, 11, 4))
    [status] = quota_status(jane, cluster)
    assert (status.period_start, status.renews) == (
        datetime(2026, 11, 18, tzinfo=UTC),
        datetime(2026, 11, 25, tzinfo=UTC),
    )
    frozen["now"] = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
    assert quota_status(jane, cluster)[0].renews == datetime(2026, 12, 2, tzinfo=UTC)


def test_periods_follow_the_consoles_time_zone(jane, cluster, grant, ml_team, settings, frozen):
    settings.TIME_ZONE = "Europe/Berlin"
    quota(cluster, ml_team, gpu_hours=1, period="day")
    # 23:30 UTC on 30 November is already 1 December in Berlin.
    frozen["now"] = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    [status] = quota_status(jane, cluster)
    assert status.period_start.isoformat() == "2026-12-01T00:00:00+01:00"
    assert status.renews_words == "2 December"


# --- the audit trail ---------------------------------------------------------------------------------


def test_a_decision_writes_nothing_and_its_refusal_is_written_once_with_its_facts(jane, cluster, grant):
    assert decide(jane, "cluster.view", cluster).allowed
    d = submit(jane, cluster, job("debug"))
    denied = refused(jane, cluster, d)
    assert (denied.action, denied.target, denied.cluster) == ("job.submit", "c1", "c1")
    assert (denied.outcome, denied.reason, denied.actor_name) == ("denied", "partition_not_granted", "jane")
    assert denied.details["request"]["partition"] == "debug"


# --- how the policy reads the grants and quotas ---------------------------------------------------------


@pytest.mark.postgres
def test_grants_and_quotas_are_found_through_indexes_not_a_scan_of_the_cluster(jane, cluster, grant, ml_team):
    """The holder filter must let PostgreSQL probe the (cluster, person) and (cluster, group) indexes.

    With `group__in=person.groups.all()` as a subquery the OR can only be checked row by row,
    so every grant and quota of the cluster was read on every decision (~4 ms each at 10,000),
    and the user table was hash-joined whole. Checked on a cluster of 2,000 people with fresh
    statistics, as the planner would see a grown database.
    """
    require(connection.vendor == "postgresql", "query plans are PostgreSQL's (DATABASE_URL)")
    people = User.objects.bulk_create(
        [User(username=f"p{n}", email=f"p{n}@corp.example") for n in range(2000)]
    )
    Grant.objects.bulk_create([Grant(cluster=cluster, user=p, partitions="cpu") for p in people])
    Quota.objects.bulk_create([Quota(cluster=cluster, user=p, cpu_hours=10) for p in people])
    quota(cluster, jane, gpu_hours=10)
    quota(cluster, ml_team, gpu_hours=100)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE access_grant, access_quota, accounts_user, accounts_user_groups, auth_group")
    with CaptureQueriesContext(connection) as captured:
        assert submit(jane, cluster, job(gpus=1, time_limit=60)).allowed
    reads = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].startswith("SELECT")
        and ('FROM "access_grant"' in q["sql"] or 'FROM "access_quota"' in q["sql"])
    ]
    assert len(reads) == 2
    with connection.cursor() as cursor:
        for sql, table in zip(reads, ("access_grant", "access_quota"), strict=True):
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(line for (line,) in cursor.fetchall())
            assert f"Seq Scan on {table}" not in plan, plan
            assert "SubPlan" not in plan, plan
            assert "Seq Scan on accounts_user" not in plan, plan


def test_a_submit_decision_reads_the_persons_groups_once(jane, cluster, grant, ml_team):
    # Once for both the grants and the quotas: each query costs ~0.5 ms of ORM work on every submit.
    quota(cluster, jane, gpu_hours=10)
    quota(cluster, ml_team, gpu_hours=100)
    with CaptureQueriesContext(connection) as captured:
        assert submit(jane, cluster, job(gpus=1, time_limit=60)).allowed
    group_reads = [q for q in captured.captured_queries if '"accounts_user_groups"' in q["sql"]]
    assert len(group_reads) == 1
