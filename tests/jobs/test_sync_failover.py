"""Two real sync loops on PostgreSQL: the standby takes over within 15 s of the active one's SIGKILL, and
every job submitted through the console still reaches its final state, its ledger settled exactly once.

The loops are `manage.py sync_jobs --interval 1` processes on the test database (a transactional test:
they see what it committed). The active one is found as an operator would find it, by the advisory lock
in pg_locks and the pid its connection names (tests/support/sync_procs.py). A standby asks for the lock
every second whatever its round interval (on any database): the last test.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import threading
import time

import pytest
from django.db import connection, connections
from django.test import Client

from access.models import Usage
from jobs import sync, sync_lock
from jobs.models import JobRecord, SyncLoop
from tests.conftest import require
from tests.support import slurm_commands, sync_procs
from tests.support.jobs_support import Person

TAKEOVER_SECONDS = 15
# Two CPUs on the test node: the jobs run two at a time, so their states change before, at and after the kill.
SLEEPS = (4, 4, 4, 4, 4, 4)
FAILS = 3  # this one exits 3: FAILED, still charged for what it used
CANCELLED = 5  # this one is cancelled with scancel while it waits, after the kill: its budget comes back
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def submit(client: Client, person: Person, n: int) -> int:
    script = f"#!/bin/bash\n#SBATCH -p debug -t 1 -J ct-failover-{n}\nsleep {SLEEPS[n]}\n"
    if n == FAILS:
        script += "exit 3\n"
    r = client.post(
        "/v1/clusters/demo/jobs",
        json.dumps({"script_path": person.script(f"failover-{n}.sh", script)}),
        content_type="application/json",
        **person.auth,
    )
    assert r.status_code == 201, r.content
    return r.json()["job"]["id"]


def slurm_state(job_id: int) -> str:
    squeue = [slurm_commands.command("squeue"), "-h", "-j", str(job_id), "-o", "%T"]
    return subprocess.run(squeue, capture_output=True, text=True).stdout.strip()


@pytest.mark.postgres
@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_the_standby_takes_over_within_15_s_of_a_sigkill_and_no_job_state_is_lost(
    people, demo_cluster, tmp_path
):
    require(connection.vendor == "postgresql", "the sync lock fails over in PostgreSQL: set DATABASE_URL")
    ada, bob = people(), people()
    url = sync_procs.database_url()
    env = sync_procs.sync_env(url)
    logs = [tmp_path / "sync-1.log", tmp_path / "sync-2.log"]
    loops: list[subprocess.Popen] = []
    try:
        loops.append(sync_procs.start_sync(env, interval=1, log=logs[0]))
        first, _ = sync_procs.wait_for_holder(url, among={loops[0].pid})
        loops.append(sync_procs.start_sync(env, interval=1, log=logs[1]))
        sync_procs.wait_for_line(logs[1], "waiting as a standby", process=loops[1])
        assert sync_procs.active_sync_pid(url) == first

        client = Client()
        job_ids = [submit(client, (ada, bob)[n % 2], n) for n in range(len(SLEEPS))]
        records = JobRecord.objects.filter(cluster=demo_cluster, slurm_job_id__in=job_ids)
        # Killed once the active loop has seen jobs start, while others still wait to.
        deadline = time.monotonic() + 30
        while not records.filter(ledger=JobRecord.Ledger.STARTED).exists():
            assert time.monotonic() < deadline, [(r.slurm_job_id, r.state, r.ledger) for r in records]
            time.sleep(0.1)
        active = next(p for p in loops if p.pid == first)
        active.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        active.wait(10)
        unfinished = sum(1 for r in records.all() if r.state not in FINAL)
        survivor, _ = sync_procs.wait_for_holder(url, other_than=first, timeout=TAKEOVER_SECONDS + 5)
        took = time.monotonic() - killed_at
        assert survivor == next(p for p in loops if p is not active).pid
        assert took < TAKEOVER_SECONDS, f"the standby took {took:.1f} s to take the lock"

        # A job that changes state after the kill: cancelled while it still waits.
        assert slurm_state(job_ids[CANCELLED]) == "PENDING"
        subprocess.run([slurm_commands.command("scancel"), str(job_ids[CANCELLED])], check=True)

        deadline = time.monotonic() + 90
        while True:
            done = [r for r in records.all() if r.state in FINAL and r.ledger in ("settled", "released")]
            if len(done) == len(job_ids):
                break
            assert time.monotonic() < deadline, [(r.slurm_job_id, r.state, r.ledger) for r in records.all()]
            time.sleep(0.3)
        assert SyncLoop.objects.get(pk=1).process.endswith(f":{survivor}")
    finally:
        for loop in loops:
            sync_procs.stop(loop)

    states = {r.slurm_job_id: (r.state, r.ledger, r.origin) for r in records.all()}
    expected = {
        job_id: (
            "CANCELLED" if n == CANCELLED else "FAILED" if n == FAILS else "COMPLETED",
            "released" if n == CANCELLED else "settled",
            "console",
        )
        for n, job_id in enumerate(job_ids)
    }
    assert states == expected
    # Exactly once: one record and one ledger entry per job (no second record adopted as if from a shell,
    # no second charge), each closed with the use Slurm reported.
    for n, job_id in enumerate(job_ids):
        assert JobRecord.objects.filter(cluster=demo_cluster, slurm_job_id=job_id).count() == 1
        [usage] = Usage.objects.filter(cluster=demo_cluster, job_id=job_id)
        if n == CANCELLED:
            assert (usage.state, usage.elapsed_seconds or 0) == (Usage.State.RELEASED, 0)
        else:
            assert usage.state == Usage.State.SETTLED
            assert SLEEPS[n] <= usage.elapsed_seconds <= SLEEPS[n] + 5, usage.elapsed_seconds
    assert unfinished >= 2, "the kill came after the jobs had finished: nothing was left for the standby"
    print(
        f"sync failover: standby took over in {took:.1f} s after SIGKILL; {len(job_ids)} jobs settled once "
        f"each, none lost ({unfinished} still unfinished at the kill; {len(job_ids) - 2} charged, 1 failed "
        "and charged, 1 cancelled while queued and released)"
    )


@pytest.mark.django_db(transaction=True)
def test_a_standby_asks_for_the_lock_every_second_whatever_the_round_interval():
    active = sync_lock.SingleInstance("active")
    assert active.acquire()
    out = io.StringIO()
    ended: list[float] = []

    def standby() -> None:
        try:
            sync.run_forever(3600, stdout=out, rounds=1)  # one round an hour, once it is active
            ended.append(time.monotonic())
        finally:
            connections.close_all()

    thread = threading.Thread(target=standby)
    thread.start()
    time.sleep(2.5)  # it asked, and asked again
    assert out.getvalue() == "Another sync_jobs loop is active; waiting as a standby.\n"
    released = time.monotonic()
    active.release()
    thread.join(10)
    assert not thread.is_alive()
    took = ended[0] - released
    assert took < sync.STANDBY_RETRY_SECONDS + 1, took
    assert SyncLoop.objects.get(pk=1).interval == 3600
