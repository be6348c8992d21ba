"""`manage.py sync_jobs`: states recorded, the ledger settled once, outside jobs adopted, one instance."""

from __future__ import annotations

import io
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from access import ledger, policy
from access.models import Grant, Usage
from accounts.models import User
from clusters.models import Cluster
from clusters.slurm import Job
from jobs import claims, sync, sync_lock, tracking
from jobs.models import JobRecord, SyncLock
from tests.conftest import require
from tests.support import slurm_commands
from tests.support.jobs_support import sbatch_as, squeue, sync_until

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def cluster(db, tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"k" * 32)
    return Cluster.objects.create(
        slug="c", name="C", slurmrestd_url="http://127.0.0.1:9", jwt_key_ref=str(key)
    )


@pytest.fixture
def reserved(cluster):
    """A console job whose budget is reserved, as a submit leaves it."""
    person = User.objects.create(username="lin")
    Grant.objects.create(cluster=cluster, user=person, all_partitions=True)
    decision = ledger.reserve(
        person, cluster, policy.Resources(partition="gpu", cpus=4, gpus=2, time_limit=60)
    )
    assert decision.allowed
    return JobRecord.objects.create(
        cluster=cluster,
        person=person,
        posix_user="lin",
        slurm_job_id=4242,
        state="PENDING",
        cpus=4,
        gpus=2,
        reservation_id=decision.reservation_id,
        ledger=JobRecord.Ledger.RESERVED,
    )


def job(state: str, **extra) -> Job:
    values = {"job_id": 4242, "user_name": "lin", "partition": "gpu", "cpus": 4, "gpus": 2, "state": state}
    return Job(**(values | extra))


# --- the ledger through a job's life (the real ledger, jobs as Slurm reports them) ----------------


@pytest.mark.django_db
def test_a_job_that_runs_is_started_then_settled_with_its_real_use_once(reserved):
    usage = Usage.objects.get(pk=reserved.reservation_id)
    assert usage.state == Usage.State.QUEUED

    tracking.apply(reserved, job("RUNNING", start_time=T0, nodes="n1", batch_host="n1"))
    usage.refresh_from_db()
    assert (usage.state, reserved.ledger, reserved.state) == (Usage.State.RUNNING, "started", "RUNNING")
    assert reserved.end_time is None  # a running job's end_time is only Slurm's deadline

    done = job(
        "COMPLETED",
        start_time=T0,
        end_time=T0 + timedelta(minutes=30),
        nodes="n1",
        batch_host="n1",
        exit_code=0,
    )
    report = tracking.Report()
    tracking.apply(reserved, done, report)
    tracking.apply(reserved, done, report)
    usage.refresh_from_db()
    assert report.settled == 1
    assert (usage.state, usage.elapsed_seconds) == (Usage.State.SETTLED, 1800)
    assert (usage.used_gpu_hours, usage.used_cpu_hours) == (1.0, 2.0)
    reserved.refresh_from_db()
    assert (reserved.ledger, reserved.state, reserved.exit_code) == ("settled", "COMPLETED", 0)


@pytest.mark.django_db
def test_a_job_cancelled_before_it_started_gives_its_reservation_back(reserved):
    # Slurm fills start_time = end_time for a job cancelled while pending, but no node ever ran it.
    cancelled = job("CANCELLED", start_time=T0, end_time=T0)
    report = tracking.Report()
    tracking.apply(reserved, cancelled, report)
    usage = Usage.objects.get(pk=reserved.reservation_id)
    assert (usage.state, report.released, reserved.ledger) == (Usage.State.RELEASED, 1, "released")
    assert reserved.start_time is None


@pytest.mark.django_db
def test_an_unchanged_job_does_not_touch_updated_so_live_lists_stay_quiet(reserved):
    running = job("RUNNING", start_time=T0, nodes="n1", batch_host="n1")
    tracking.apply(reserved, running)
    before = JobRecord.objects.get(pk=reserved.pk).updated
    assert tracking.apply(reserved, running) is False
    after = JobRecord.objects.get(pk=reserved.pk)
    assert after.updated == before
    assert after.last_seen is not None


@pytest.mark.django_db
def test_a_claim_left_by_a_dead_worker_is_released_and_removed(reserved):
    reserved.slurm_job_id = None
    reserved.save()
    JobRecord.objects.filter(pk=reserved.pk).update(created=timezone.now() - timedelta(minutes=30))
    report = tracking.Report()
    claims.release_stale_claims(report)
    assert not JobRecord.objects.filter(pk=reserved.pk).exists()
    assert Usage.objects.get(pk=reserved.reservation_id).state == Usage.State.RELEASED


# --- one instance -----------------------------------------------------------------------------------


def in_thread(work):
    """Run `work` on another thread (its own database connection, as another process would have)."""
    box = {}

    def run():
        try:
            box["value"] = work()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return box.get("value")


@pytest.mark.django_db(transaction=True)
def test_only_one_sync_loop_holds_the_lock():
    first = sync_lock.SingleInstance("first")
    assert first.acquire()
    assert in_thread(lambda: sync_lock.SingleInstance("second").acquire()) is False
    out = io.StringIO()
    in_thread(lambda: call_command("sync_jobs", "--once", stdout=out))
    assert "Another sync_jobs loop holds the lock" in out.getvalue()
    assert first.refresh() is True
    first.release()
    second = sync_lock.SingleInstance("second")
    assert in_thread(lambda: second.acquire()) is True
    in_thread(second.release)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lock_holder_whose_connection_ends_frees_the_lock_even_through_the_pool():
    require(connection.vendor == "postgresql", "advisory locks are PostgreSQL's")
    # The thread takes the lock and ends without releasing it, as a killed loop would. Its connection
    # goes back to the pool instead of ending the session: the pool must drop the session's locks.
    assert in_thread(lambda: sync_lock.SingleInstance("crashed").acquire()) is True
    for _ in range(3):  # whichever pooled connection the next one gets
        assert soon(lambda: in_thread(lambda: sync_lock.SingleInstance("next").acquire())), (
            "the lock was still held 2 s after its holder's connection went back to the pool"
        )


def soon(attempt, seconds: float = 2.0) -> bool:
    """Whether `attempt()` is true within `seconds`. psycopg_pool resets a returned connection (and so frees
    its advisory locks) on a worker of its own: the next thread may get another connection a moment before
    the reset has run, and take the lock at its next try, as the sync loop retries every second."""
    deadline = time.monotonic() + seconds
    while not attempt():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.django_db(transaction=True)
def test_the_loop_runs_rounds_while_it_holds_the_lock_and_lets_go_after(monkeypatch):
    monkeypatch.setattr(sync, "QUIET_NOTE_ROUNDS", 3)
    out = io.StringIO()
    sync.run_forever(0.01, stdout=out, rounds=7)
    lines = out.getvalue().splitlines()
    # Nothing to sync: the first quiet round says so, then one line in every QUIET_NOTE_ROUNDS.
    assert len(lines) == 3, lines
    assert all("people polled" in line for line in lines)
    assert lines[0].endswith("0 errors")
    assert lines[1].endswith("(the last 3 rounds changed nothing)")
    assert in_thread(lambda: sync_lock.SingleInstance("after").acquire()) is True


@pytest.mark.django_db(transaction=True)
def test_a_lock_row_left_by_a_crashed_loop_expires():
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL frees an advisory lock when its session ends")
    SyncLock.objects.create(
        name=sync_lock.LOCK_NAME, holder="crashed", expires=timezone.now() - timedelta(seconds=1)
    )
    taker = sync_lock.SingleInstance("next")
    assert taker.acquire()
    assert SyncLock.objects.get(name=sync_lock.LOCK_NAME).holder == "next"
    taker.release()


# --- against the real Slurm, on each release (tests/conftest.py, every_release) -------------------------


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.every_release
@pytest.mark.django_db
def test_a_job_submitted_with_sbatch_in_a_terminal_is_adopted_and_its_use_recorded(ada):
    job_id = sbatch_as(
        ada.name, "-p", "debug", "-t", "1", "-J", "ct-outside", f"--chdir={ada.home}", "--wrap", "sleep 2"
    )

    call_command("sync_jobs", "--once", stdout=io.StringIO())

    record = JobRecord.objects.get(slurm_job_id=job_id, cluster__slug="demo")
    assert (record.origin, record.person, record.posix_user, record.name) == (
        "outside",
        ada.user,
        ada.name,
        "ct-outside",
    )
    assert record.stdout_path == f"{ada.home}/slurm-{job_id}.out"
    record = sync_until(record, {"COMPLETED"})
    usage = Usage.objects.get(cluster__slug="demo", job_id=job_id)
    assert (usage.origin, usage.state, usage.user) == ("outside", "settled", ada.user)
    assert usage.elapsed_seconds >= 2
    assert record.ledger == "recorded"
    call_command("sync_jobs", "--once", stdout=io.StringIO())
    assert Usage.objects.filter(job_id=job_id, cluster__slug="demo").count() == 1


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.every_release
@pytest.mark.django_db
def test_a_submit_in_flight_is_not_mistaken_for_an_outside_job(ada, demo_cluster):
    claim = JobRecord.objects.create(cluster=demo_cluster, person=ada.user, posix_user=ada.name)
    job_id = sbatch_as(ada.name, "-p", "debug", "-t", "1", "--wrap", "sleep 5")

    call_command("sync_jobs", "--once", stdout=io.StringIO())
    assert not JobRecord.objects.filter(slurm_job_id=job_id).exists()

    claim.slurm_job_id, claim.state = job_id, "PENDING"
    claim.save()
    call_command("sync_jobs", "--once", stdout=io.StringIO())
    assert JobRecord.objects.get(slurm_job_id=job_id).pk == claim.pk
    subprocess.run([slurm_commands.command("scancel"), str(job_id)], check=True)


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.every_release
@pytest.mark.django_db
def test_a_job_slurmctld_forgot_is_read_from_accounting(ada, demo_cluster):
    job_id = sbatch_as(ada.name, "-p", "debug", "-t", "1", "--wrap", "exit 3")
    deadline = time.monotonic() + 20
    while str(job_id) in squeue(ada.name) and time.monotonic() < deadline:
        time.sleep(0.2)
    found = None
    while found is None and time.monotonic() < deadline:
        found = tracking.from_sacct(demo_cluster, ada.name, job_id)
        # Right after the job leaves the queue, accounting may list its final state a moment before the exit
        # code its batch step reported (seen on 26.05 with the machine busy); the sync loop meets such a job
        # MinJobAge later, with the record complete.
        if found is None or found.state not in ("FAILED", "COMPLETED") or found.exit_code is None:
            found = None
            time.sleep(0.3)
    assert found is not None
    assert (found.job_id, found.state, found.exit_code, found.user_name) == (job_id, "FAILED", 3, ada.name)
    assert found.start_time is not None
    assert found.end_time is not None
