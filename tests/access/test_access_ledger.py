"""access.ledger: dry runs, a job's life in the ledger, idempotency, and races."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group
from django.db import connection

from access import ledger, policy
from access.ledger import reserve
from access.models import Grant, Quota, Usage
from access.policy import Resources, quota_status
from accounts.models import User
from audit.models import AuditEvent
from clusters.models import Cluster
from tests.conftest import require


@pytest.fixture
def budget(cluster, ml_team) -> Quota:
    return Quota.objects.create(
        cluster=cluster, group=ml_team, gpu_hours=10, cpu_hours=100, max_queued_jobs=5
    )


GPU_JOB = Resources("gpu", nodes=1, cpus=8, gpus=2, time_limit=90)  # 3 GPU-hours, 12 CPU-hours


def status(person, cluster):
    [s] = quota_status(person, cluster)
    return s


# --- dry run -----------------------------------------------------------------------------------------


def test_a_dry_run_gives_the_real_decision_and_reserves_nothing(jane, cluster, budget):
    dry = reserve(jane, cluster, GPU_JOB, dry_run=True)
    assert Usage.objects.count() == 0
    real = reserve(jane, cluster, GPU_JOB)
    assert (dry.allowed, dry.code, dry.message, dry.facts) == (
        real.allowed,
        real.code,
        real.message,
        real.facts,
    )
    assert dry.reservation_id is None
    assert real.reservation_id == Usage.objects.get().pk
    # Neither writes an audit event: the submit that asked does (jobs.submit), with its dry_run.
    assert not AuditEvent.objects.exists()


def test_a_refused_dry_run_says_the_same_sentence_as_the_real_refusal(jane, cluster, budget):
    big = Resources("gpu", gpus=8, time_limit=120)
    dry = reserve(jane, cluster, big, dry_run=True)
    real = reserve(jane, cluster, big)
    assert dry == real
    assert (real.allowed, real.code) == (False, "gpu_budget")
    assert Usage.objects.count() == 0


def test_decide_for_a_submission_never_reserves(jane, cluster, budget):
    assert policy.decide(jane, "job.submit", cluster, GPU_JOB).allowed
    assert Usage.objects.count() == 0


# --- a job's life ------------------------------------------------------------------------------------


def test_reserve_holds_the_requests_hours_against_the_budget(jane, cluster, budget):
    d = reserve(jane, cluster, GPU_JOB)
    entry = Usage.objects.get(pk=d.reservation_id)
    assert (entry.state, entry.username, entry.partition) == (Usage.State.QUEUED, "jane", "gpu")
    assert (entry.reserved_gpu_hours, entry.reserved_cpu_hours) == (3.0, 12.0)
    assert list(entry.groups.all()) == [jane.groups.get()]
    s = status(jane, cluster)
    assert (s.gpu_hours_reserved, s.gpu_hours_left, s.cpu_hours_left, s.queued_jobs) == (3.0, 7.0, 88.0, 1)


def test_a_settled_job_replaces_its_reservation_with_elapsed_times_allocated(jane, cluster, budget):
    rid = reserve(jane, cluster, GPU_JOB).reservation_id
    ledger.attach(rid, 4242)
    ledger.started(rid)
    s = status(jane, cluster)
    assert (s.running_jobs, s.queued_jobs, s.gpu_hours_reserved) == (1, 0, 3.0)

    # Asked for 90 minutes, ran 30 on the 2 GPUs and 8 CPUs Slurm allocated.
    ledger.settle(rid, elapsed_seconds=1800, cpus=8, gpus=2)
    entry = Usage.objects.get(pk=rid)
    assert (entry.state, entry.job_id, entry.elapsed_seconds) == (Usage.State.SETTLED, 4242, 1800)
    assert (entry.used_gpu_hours, entry.used_cpu_hours) == (1.0, 4.0)
    assert entry.ended_at is not None
    s = status(jane, cluster)
    assert (s.running_jobs, s.queued_jobs, s.gpu_hours_reserved, s.gpu_hours_used) == (0, 0, 0.0, 1.0)
    assert (s.gpu_hours_left, s.cpu_hours_left) == (9.0, 96.0)


def test_settle_takes_slurms_end_time_for_the_period(jane, cluster, budget):
    rid = reserve(jane, cluster, GPU_JOB).reservation_id
    ended = datetime(2020, 1, 1, tzinfo=UTC)
    ledger.settle(rid, elapsed_seconds=3600, cpus=8, gpus=2, ended=ended)
    assert Usage.objects.get(pk=rid).ended_at == ended
    assert status(jane, cluster).gpu_hours_used == 0.0  # charged to January 2020, long renewed


def test_release_gives_everything_back(jane, cluster, budget):
    rid = reserve(jane, cluster, GPU_JOB).reservation_id
    ledger.release(rid, "slurmrestd refused the job: invalid partition")
    entry = Usage.objects.get(pk=rid)
    assert (entry.state, entry.release_reason) == (
        Usage.State.RELEASED,
        "slurmrestd refused the job: invalid partition",
    )
    s = status(jane, cluster)
    assert (s.gpu_hours_reserved, s.gpu_hours_used, s.gpu_hours_left, s.queued_jobs) == (0.0, 0.0, 10.0, 0)


def test_a_hold_is_written_with_its_job_id_under_the_same_locks(jane, cluster, budget):
    from django.db import transaction

    with transaction.atomic():
        held = ledger.hold(jane, cluster, GPU_JOB)
        assert held.decision.allowed
        assert held.decision.reservation_id is None
        assert Usage.objects.count() == 0  # nothing written while Slurm is asked
        rid = held.write(job_id=4242)
        with pytest.raises(ValueError, match="already written"):
            held.write(job_id=4243)
    entry = Usage.objects.get(pk=rid)
    assert (entry.state, entry.job_id, entry.reserved_gpu_hours) == (Usage.State.QUEUED, 4242, 3.0)
    assert list(entry.groups.all()) == [jane.groups.get()]
    assert status(jane, cluster).gpu_hours_reserved == 3.0


def test_a_hold_whose_submit_failed_is_written_released(jane, cluster, budget):
    from django.db import transaction

    with transaction.atomic():
        rid = ledger.hold(jane, cluster, GPU_JOB).write(released="submit failed: slurm_rejected")
    entry = Usage.objects.get(pk=rid)
    assert (entry.state, entry.job_id, entry.release_reason) == (
        Usage.State.RELEASED,
        None,
        "submit failed: slurm_rejected",
    )
    assert entry.ended_at is not None
    s = status(jane, cluster)
    assert (s.gpu_hours_reserved, s.gpu_hours_left, s.queued_jobs) == (0.0, 10.0, 0)


# Real transactions: inside a test's own wrapping transaction every block would be the same one.
@pytest.mark.django_db(transaction=True)
def test_a_hold_is_written_only_in_the_transaction_that_took_its_locks(jane, cluster, budget):
    from django.db import transaction

    with pytest.raises(RuntimeError, match="outside a transaction"):
        ledger.hold(jane, cluster, GPU_JOB)
    with transaction.atomic():
        held = ledger.hold(jane, cluster, GPU_JOB)
    # The locks ended with that transaction: another submit may have used what this decision saw.
    with pytest.raises(RuntimeError, match="outside the transaction"), transaction.atomic():
        held.write(job_id=1)
    with transaction.atomic():
        refused = ledger.hold(jane, cluster, Resources("gpu", gpus=8, time_limit=120))
        with pytest.raises(ValueError, match="nothing to reserve"):
            refused.write(job_id=2)
    assert ledger.hold(jane, cluster, GPU_JOB, dry_run=True).decision.allowed  # no locks, no transaction
    assert Usage.objects.count() == 0


def test_every_step_is_idempotent(jane, cluster, budget):
    rid = reserve(jane, cluster, GPU_JOB).reservation_id
    ledger.attach(rid, 7)
    ledger.attach(rid, 7)
    ledger.started(rid)
    ledger.started(rid)
    ledger.settle(rid, elapsed_seconds=3600, cpus=8, gpus=2)
    settled = Usage.objects.get(pk=rid)
    ledger.settle(rid, elapsed_seconds=99999, cpus=64, gpus=8)
    ledger.release(rid, "late")
    ledger.started(rid)
    again = Usage.objects.get(pk=rid)
    assert (
        again.state,
        again.used_gpu_hours,
        again.elapsed_seconds,
        again.ended_at,
        again.release_reason,
    ) == (
        Usage.State.SETTLED,
        settled.used_gpu_hours,
        3600,
        settled.ended_at,
        "",
    )

    other = reserve(jane, cluster, GPU_JOB).reservation_id
    ledger.release(other, "first")
    ledger.release(other, "second")
    assert Usage.objects.get(pk=other).release_reason == "first"
    assert status(jane, cluster).gpu_hours_used == 2.0


def test_release_does_not_forget_a_running_job(jane, cluster, budget):
    rid = reserve(jane, cluster, GPU_JOB).reservation_id
    ledger.started(rid)
    ledger.release(rid, "cancelled")
    assert Usage.objects.get(pk=rid).state == Usage.State.RUNNING
    assert status(jane, cluster).gpu_hours_reserved == 3.0


def test_a_released_job_that_ran_after_all_is_settled_with_its_real_use(jane, cluster, budget):
    rid = reserve(jane, cluster, GPU_JOB).reservation_id
    ledger.release(rid, "cancelled while queued")
    ledger.settle(rid, elapsed_seconds=360, cpus=8, gpus=2)
    assert Usage.objects.get(pk=rid).state == Usage.State.SETTLED
    assert status(jane, cluster).gpu_hours_used == pytest.approx(0.2)


def test_attach_refuses_to_move_a_reservation_to_another_job(jane, cluster, budget):
    rid = reserve(jane, cluster, GPU_JOB).reservation_id
    ledger.attach(rid, 1)
    with pytest.raises(ValueError, match="already belongs to job 1"):
        ledger.attach(rid, 2)


def test_unknown_reservations_and_negative_use_are_refused(jane, cluster):
    with pytest.raises(ledger.UnknownReservation):
        ledger.started(123456)
    with pytest.raises(ValueError, match="negative"):
        ledger.settle(1, elapsed_seconds=-1, cpus=1, gpus=0)


def test_use_outside_the_console_counts_once(jane, cluster, budget):
    ended = datetime.now(UTC)
    for _ in range(2):
        ledger.record_outside_use(jane, cluster, 555, elapsed_seconds=7200, cpus=4, gpus=1, ended=ended)
    entry = Usage.objects.get()
    assert (entry.origin, entry.state, entry.job_id, entry.used_gpu_hours, entry.used_cpu_hours) == (
        Usage.Origin.OUTSIDE,
        Usage.State.SETTLED,
        555,
        2.0,
        8.0,
    )
    assert status(jane, cluster).gpu_hours_left == 8.0


def test_outside_use_may_overrun_a_budget_and_then_nothing_is_left(jane, cluster, budget):
    ledger.record_outside_use(
        jane, cluster, 556, elapsed_seconds=36000, cpus=1, gpus=2, ended=datetime.now(UTC)
    )
    s = status(jane, cluster)
    assert (s.gpu_hours_used, s.gpu_hours_left) == (20.0, 0.0)
    d = reserve(jane, cluster, Resources("gpu", gpus=1, time_limit=1))
    assert d.code == "gpu_budget"
    assert "has 0.0 of 10.0 left" in d.message


# --- races (PostgreSQL: SQLite serialises writers by itself) -------------------------------------------


def race(people, cluster, request, monkeypatch) -> list[policy.Decision]:
    """Every person calls reserve() at once, each thread on its own database connection."""
    real_open = ledger.open_reservation

    def slow_open(*args, **kwargs):
        # Widens the gap between the check and the write, where a missing lock would let two through.
        time.sleep(0.005)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(ledger, "open_reservation", slow_open)
    barrier = threading.Barrier(len(people))
    decisions: list[policy.Decision] = []
    errors: list[BaseException] = []

    def submit(person):
        try:
            barrier.wait()
            decisions.append(reserve(person, cluster, request))
        except BaseException as e:
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(p,)) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return decisions


@pytest.fixture
def forty(transactional_db):
    require(connection.vendor == "postgresql", "row locks between threads need PostgreSQL (DATABASE_URL)")
    cluster = Cluster.objects.create(slug="race", name="Race", slurmrestd_url="http://127.0.0.1:9")
    team = Group.objects.create(name="racers")
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    people = [User.objects.create(username=f"racer{i}") for i in range(40)]
    for p in people:
        p.groups.add(team)
    return cluster, team, people


@pytest.mark.postgres
def test_forty_concurrent_submits_against_ten_queue_slots_accept_exactly_ten(forty, monkeypatch):
    cluster, team, people = forty
    Quota.objects.create(cluster=cluster, group=team, max_queued_jobs=10)
    decisions = race(people, cluster, Resources("cpu"), monkeypatch)
    assert sum(d.allowed for d in decisions) == 10
    assert {d.code for d in decisions if not d.allowed} == {"max_queued_jobs"}
    assert Usage.objects.filter(cluster=cluster, state=Usage.State.QUEUED).count() == 10
    # Reserving writes no audit event; each refused submit is written by jobs.submit.
    assert not AuditEvent.objects.exists()


@pytest.mark.postgres
def test_forty_concurrent_submits_against_ten_gpu_hours_accept_exactly_ten(forty, monkeypatch):
    cluster, team, people = forty
    Quota.objects.create(cluster=cluster, group=team, gpu_hours=10)
    decisions = race(people, cluster, Resources("gpu", gpus=1, time_limit=60), monkeypatch)
    assert sum(d.allowed for d in decisions) == 10
    assert {d.code for d in decisions if not d.allowed} == {"gpu_budget"}
    assert sum(Usage.objects.filter(cluster=cluster).values_list("reserved_gpu_hours", flat=True)) == 10.0
    [s] = quota_status(people[0], cluster)
    assert (s.gpu_hours_reserved, s.gpu_hours_left) == (10.0, 0.0)
