"""access.held: decisions from the policy each process holds in memory, and how soon they see a change.

Transactional tests (committed rows), because inside a transaction that changed the policy the
decisions read the database directly; here they read what the process holds, as a web worker does.
The holder's clock is a fake one moved by hand, so "within the bound" is exact, not a sleep.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction

import access.held
from access.held import held, read_version
from access.ledger import reserve
from access.models import Grant, Quota
from access.policy import Resources, decide
from accounts.models import User
from clusters.models import Cluster
from tests.support.sync_procs import REPO, sync_env

FRESHNESS = 1.0
JOB = Resources("cpu", cpus=2, time_limit=60)


@pytest.fixture
def clock(monkeypatch, settings):
    """The holder's monotonic clock, moved by the test; the bound is FRESHNESS seconds."""
    settings.CLUSTERRA_POLICY_FRESHNESS_SECONDS = FRESHNESS
    now = {"t": 1000.0}
    monkeypatch.setattr(access.held, "time", SimpleNamespace(monotonic=lambda: now["t"]))
    held.forget_everything()
    yield SimpleNamespace(advance=lambda seconds: now.__setitem__("t", now["t"] + seconds))
    held.forget_everything()


@pytest.fixture
def place(transactional_db):
    cluster = Cluster.objects.create(slug="held", name="Held", slurmrestd_url="http://127.0.0.1:9")
    team = Group.objects.create(name="held-team")
    Grant.objects.create(cluster=cluster, group=team, partitions="cpu")
    quota = Quota.objects.create(cluster=cluster, group=team, max_queued_jobs=1, cpu_hours=100)
    jane = User.objects.create(username="held-jane")
    jane.groups.add(team)
    return SimpleNamespace(cluster=cluster, team=team, quota=quota, jane=jane)


def fresh(person: User) -> User:
    # What a request has: the person read again (is_active is always read from it, never held).
    return User.objects.get(pk=person.pk)


def elsewhere(code: str) -> None:
    """Run `code` in another console process (manage.py shell) against this test's database."""
    done = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "shell", "-c", code],
        cwd=REPO,
        env=sync_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- what a decision costs --------------------------------------------------------------------------


def test_a_decision_from_held_rules_asks_the_database_nothing(place, clock, django_assert_num_queries):
    jane = fresh(place.jane)
    assert decide(jane, "job.submit", place.cluster, JOB).allowed
    with django_assert_num_queries(0):
        for _ in range(20):
            assert decide(jane, "job.submit", place.cluster, JOB).allowed
    clock.advance(FRESHNESS + 0.01)
    # Past the bound: the version (unchanged) and the quota's use are read again, nothing else.
    with django_assert_num_queries(2):
        assert decide(jane, "job.submit", place.cluster, JOB).allowed


def test_the_rules_load_in_three_queries_whatever_the_number_of_people(
    place, clock, django_assert_num_queries
):
    people = User.objects.bulk_create([User(username=f"held-p{i}") for i in range(200)])
    Grant.objects.bulk_create([Grant(cluster=place.cluster, user=p, partitions="cpu") for p in people])
    Quota.objects.bulk_create([Quota(cluster=place.cluster, user=p, max_running_jobs=3) for p in people])
    place.team.user_set.add(*people)
    person = fresh(people[7])
    # The version, the grants, the quotas, the members of the groups holding them; then one person's use.
    with django_assert_num_queries(5):
        decision = decide(person, "job.submit", place.cluster, JOB)
    assert decision.allowed
    assert [q["scope"] for q in decision.facts["quotas"]] == ["you", "group held-team"]


def test_a_reservation_reads_the_version_the_locked_quotas_and_their_use(
    place, clock, django_assert_num_queries
):
    jane = fresh(place.jane)
    assert decide(jane, "job.submit", place.cluster, JOB).allowed
    # What ledger.reserve decides with: the version, the quota rows locked, their use (it was five).
    with transaction.atomic(), django_assert_num_queries(3):
        assert decide(jane, "job.submit", place.cluster, JOB, lock=True).allowed


# --- a change made in this process: seen at once ----------------------------------------------------


def test_a_withdrawn_grant_is_seen_by_the_next_decision(place, clock):
    jane = fresh(place.jane)
    assert decide(jane, "job.submit", place.cluster, JOB).allowed
    Grant.objects.get(cluster=place.cluster, group=place.team).delete()
    assert decide(jane, "job.submit", place.cluster, JOB).code == "no_grant"


def test_a_lowered_quota_is_seen_by_the_next_decision(place, clock):
    jane = fresh(place.jane)
    assert decide(jane, "job.submit", place.cluster, JOB).allowed
    place.quota.max_walltime = 30
    place.quota.save()
    decision = decide(jane, "job.submit", place.cluster, JOB)
    assert (decision.code, decision.facts["limit"]) == ("max_walltime", 30)


def test_leaving_a_group_is_seen_by_the_next_decision(place, clock):
    jane = fresh(place.jane)
    assert decide(jane, "job.submit", place.cluster, JOB).allowed
    jane.groups.remove(place.team)
    assert decide(jane, "job.submit", place.cluster, JOB).code == "no_grant"


def test_a_reservation_made_here_is_counted_by_the_next_decision(place, clock):
    jane = fresh(place.jane)
    assert decide(jane, "job.submit", place.cluster, JOB).allowed
    assert reserve(jane, place.cluster, JOB).allowed
    decision = decide(jane, "job.submit", place.cluster, JOB)
    assert (decision.code, decision.facts["queued_jobs"]) == ("max_queued_jobs", 1)


def test_deactivation_needs_no_refresh(place, clock):
    jane = fresh(place.jane)
    assert decide(jane, "job.submit", place.cluster, JOB).allowed
    User.objects.filter(pk=jane.pk).update(is_active=False)  # not even a signal
    assert decide(fresh(jane), "job.submit", place.cluster, JOB).code == "inactive"


def test_a_change_rolled_back_never_reaches_the_held_rules(place, clock):
    jane = fresh(place.jane)
    assert decide(jane, "job.submit", place.cluster, JOB).allowed
    with transaction.atomic():
        Grant.objects.get(cluster=place.cluster, group=place.team).delete()
        # The transaction's own decisions see its change, from the database...
        assert decide(jane, "job.submit", place.cluster, JOB).code == "no_grant"
        transaction.set_rollback(True)
    # ...and what the process holds never had it.
    assert decide(jane, "job.submit", place.cluster, JOB).allowed
    clock.advance(FRESHNESS + 0.01)
    assert decide(jane, "job.submit", place.cluster, JOB).allowed


def test_every_rule_change_moves_the_clusters_version_in_its_transaction(place, clock):
    before = read_version(place.cluster.pk)
    with transaction.atomic():
        place.quota.max_running_jobs = 4
        place.quota.save()
        assert read_version(place.cluster.pk) == before + 1
    other = Cluster.objects.create(slug="held2", name="Held 2", slurmrestd_url="http://127.0.0.1:9")
    place.jane.groups.remove(place.team)  # membership: every cluster, whether it had a version or not
    assert read_version(place.cluster.pk) > before + 1
    assert read_version(other.pk) > 0


# --- a change made by another process: seen within the bound ----------------------------------------


@pytest.mark.postgres
def test_another_process_changes_are_seen_within_the_bound(place, clock):
    jane = fresh(place.jane)
    c = f"from access.models import *; from accounts.models import User; from clusters.models import Cluster; c = Cluster.objects.get(pk={place.cluster.pk}); jane = User.objects.get(pk={jane.pk})"  # noqa: E501
    assert decide(jane, "job.submit", place.cluster, JOB).allowed

    # A reservation there takes the only queue slot.
    elsewhere(f"{c}; from access.ledger import reserve; from access.policy import Resources; "
              f"assert reserve(jane, c, Resources('cpu', cpus=2, time_limit=60)).allowed")  # fmt: skip
    assert decide(jane, "job.submit", place.cluster, JOB).allowed  # held use, younger than the bound
    assert reserve(jane, place.cluster, JOB).code == "max_queued_jobs"  # a reservation is exact at once
    clock.advance(FRESHNESS + 0.01)
    assert decide(jane, "job.submit", place.cluster, JOB).code == "max_queued_jobs"

    # The quota raised there, then lowered in walltime.
    raise_it = "q.max_queued_jobs = 5; q.max_walltime = 30; q.save()"
    elsewhere(f"{c}; q = Quota.objects.get(pk={place.quota.pk}); {raise_it}")
    assert decide(jane, "job.submit", place.cluster, JOB).code == "max_queued_jobs"
    clock.advance(FRESHNESS + 0.01)
    decision = decide(jane, "job.submit", place.cluster, JOB)
    assert (decision.code, decision.facts["limit"]) == ("max_walltime", 30)

    # Jane removed from the group there; the group's grant was her only one.
    elsewhere(f"{c}; jane.groups.clear()")
    assert decide(jane, "job.submit", place.cluster, JOB).code == "max_walltime"
    clock.advance(FRESHNESS + 0.01)
    assert decide(jane, "job.submit", place.cluster, JOB).code == "no_grant"

    # Her own grant there, then withdrawn there.
    elsewhere(f"{c}; Grant.objects.create(cluster=c, user=jane, partitions='cpu')")
    clock.advance(FRESHNESS + 0.01)
    assert decide(jane, "job.submit", place.cluster, JOB).allowed
    elsewhere(f"{c}; Grant.objects.filter(cluster=c, user=jane).delete()")
    clock.advance(FRESHNESS + 0.01)
    assert decide(jane, "job.submit", place.cluster, JOB).code == "no_grant"


# --- threads ----------------------------------------------------------------------------------------


def test_a_refresh_never_serves_half_built_rules(place, clock, monkeypatch):
    """Two grants change together; deciding threads see both old or both new, never one of each."""
    own = Grant.objects.create(cluster=place.cluster, user=place.jane, partitions="a")
    group = Grant.objects.get(cluster=place.cluster, group=place.team)
    group.partitions = "b"
    group.save()
    states = {("a", "b"), ("c", "d")}
    real_load = access.held.Rules.load

    def slow_load(*args, **kwargs):
        time.sleep(0.002)  # a wider window for a thread to meet a rebuild half done
        return real_load(*args, **kwargs)

    monkeypatch.setattr(access.held.Rules, "load", slow_load)
    seen: list[tuple[str, ...]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def decide_on() -> None:
        try:
            jane = fresh(place.jane)
            while not stop.is_set():
                d = decide(jane, "job.submit", place.cluster, Resources("none"))
                seen.append(tuple(d.facts["granted_partitions"]))
        except BaseException as e:
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=decide_on) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(30):
        with transaction.atomic():
            own.partitions, group.partitions = ("c", "d") if i % 2 == 0 else ("a", "b")
            own.save()
            group.save()
        time.sleep(0.005)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert set(seen) <= states, set(seen) - states
    assert set(seen) == states
