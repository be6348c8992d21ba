"""The sync loop polls clusters at once: a hung slurmrestd delays no other cluster; /healthz tells staff.

The hung cluster is a real registry row whose slurmrestd is a proxy that reads every request and never
answers (tests/support/faulty_slurmrestd.py, HOLD); the other is the real Slurm. Transactional tests:
each cluster's part of a round runs on a thread with its own database connection, which sees only what
the test committed.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from access.models import Usage
from accounts.models import ClusterAccount, PosixAccount, User
from clusterra_site import views
from clusters.models import Cluster
from jobs import sync
from jobs.models import JobRecord, SyncLoop, SyncRound
from tests.support.faulty_slurmrestd import Fault, FaultyProxy
from tests.support.jobs_support import Person, sbatch_as

# The round's wait for one cluster, in these tests (CLUSTERRA_SYNC_CLUSTER_SECONDS).
DEADLINE = 3
# How long one request to the hung slurmrestd may take: far past the rounds the test watches.
HUNG_READ_TIMEOUT = 120
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}


def also_on(cluster: Cluster, person: Person) -> None:
    """The person's account is ready on `cluster` too (as on the real one), so each round polls them there."""
    real = ClusterAccount.objects.get(account__user=person.user, cluster__slug="demo")
    ClusterAccount.objects.create(
        account=PosixAccount.objects.get(user=person.user),
        cluster=cluster,
        state=ClusterAccount.State.READY,
        user_created_at=real.user_created_at,
        associated_at=real.associated_at,
    )


def like_demo(demo_cluster: Cluster, slug: str, url: str) -> Cluster:
    """Another registry row for a slurmrestd at `url`, keyed and configured as the real cluster is."""
    return Cluster.objects.create(
        slug=slug,
        name=f"Cluster {slug}",
        slurmrestd_url=url,
        api_version=demo_cluster.api_version,
        jwt_key_ref=demo_cluster.jwt_key_ref,
        has_accounting=demo_cluster.has_accounting,
        slurm_bin=demo_cluster.slurm_bin,
    )


def submit(client: Client, person: Person, script: str) -> int:
    r = client.post(
        "/v1/clusters/demo/jobs",
        json.dumps({"script_path": script}),
        content_type="application/json",
        **person.auth,
    )
    assert r.status_code == 201, r.content
    return r.json()["job"]["id"]


@pytest.fixture
def deadline(settings):
    settings.CLUSTERRA_SYNC_CLUSTER_SECONDS = DEADLINE
    settings.SLURM_READ_TIMEOUT = HUNG_READ_TIMEOUT


@pytest.fixture
def hung_restd(slurm_env):
    """A slurmrestd that accepts every request and never answers; a task still waiting on it ends after."""
    proxy = FaultyProxy(slurm_env.url, hold_seconds=HUNG_READ_TIMEOUT * 3).start()
    proxy.everything = Fault.HOLD
    try:
        yield proxy
    finally:
        # Its listener closed and its held connections cut: a task still waiting gets its error and ends.
        proxy.stop()
        left = sync.wait_for_rounds(HUNG_READ_TIMEOUT)
        assert left == [], f"cluster tasks still running after the test: {left}"


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_a_hung_slurmrestd_delays_no_other_cluster_and_staff_see_each_round_time(
    people, demo_cluster, hung_restd, deadline, admin_client
):
    hung = like_demo(demo_cluster, "hung", hung_restd.url)
    ada = people()
    also_on(hung, ada)
    client = Client()
    scripts = [ada.script(f"r{n}.sh", f"#!/bin/bash\n#SBATCH -p debug -t 1\nsleep {3 * n}\n") for n in (1, 2)]
    job_ids = [submit(client, ada, script) for script in scripts]

    started = time.monotonic()
    first = sync.sync_once()
    first_seconds = time.monotonic() - started

    # The round did not wait past the deadline for the hung cluster, and the real one was polled in it.
    assert first_seconds < DEADLINE + 2, first_seconds
    hung_errors = [e for e in first.errors if e.startswith("hung/")]
    assert hung_errors == [
        f"hung/sync: no answer within {DEADLINE} s (CLUSTERRA_SYNC_CLUSTER_SECONDS) while reading "
        f"{ada.name}'s queue; its round goes on in the background and the next rounds skip hung until it ends"
    ], first.errors
    assert [e for e in first.errors if not e.startswith("hung/")] == []
    assert first.people == 1  # ada on the real cluster; the hung cluster's count never came in
    demo_round = SyncRound.objects.get(cluster=demo_cluster)
    assert (demo_round.ok, demo_round.accounts) == (True, 1), demo_round.detail
    assert demo_round.finished is not None
    assert demo_round.seconds < DEADLINE
    assert JobRecord.objects.filter(slurm_job_id__in=job_ids, last_seen__isnull=False).count() == 2
    hung_round = SyncRound.objects.get(cluster=hung)
    assert (hung_round.finished, hung_round.ok) == (None, False)
    assert hung_round.detail.startswith(f"No answer within {DEADLINE} s (CLUSTERRA_SYNC_CLUSTER_SECONDS)")

    # Later rounds skip the hung cluster while its task is still busy, and take no longer for it.
    later: list[float] = []
    demo_seconds: list[float] = [demo_round.seconds]
    give_up = time.monotonic() + 60
    while True:
        time.sleep(0.5)
        started = time.monotonic()
        report = sync.sync_once()
        later.append(time.monotonic() - started)
        demo_seconds.append(SyncRound.objects.get(cluster=demo_cluster).seconds)
        [skip] = [e for e in report.errors if e.startswith("hung/")]
        assert skip.startswith("hung/sync: skipped: its round that started "), skip
        assert skip.endswith(f"ago is still reading {ada.name}'s queue"), skip
        assert [e for e in report.errors if not e.startswith("hung/")] == []
        records = JobRecord.objects.filter(slurm_job_id__in=job_ids, cluster=demo_cluster)
        if all(r.state in FINAL and r.ledger == "settled" for r in records):
            break
        assert time.monotonic() < give_up, [(r.slurm_job_id, r.state, r.ledger) for r in records]
    assert max(later) < DEADLINE, later
    assert sync.wait_for_rounds(0) == ["hung"]  # still waiting for its slurmrestd
    for job_id in job_ids:
        usage = Usage.objects.get(cluster=demo_cluster, job_id=job_id)
        assert (usage.state, usage.elapsed_seconds >= 1) == (Usage.State.SETTLED, True)

    # Staff see both clusters' round times and the loop's last round; nobody else sees any of it.
    asked = time.monotonic()
    body = admin_client.get("/healthz").json()
    # Its ping hangs too, and is said to, without holding the answer for slurmrestd's read timeout.
    assert time.monotonic() - asked < views.PROBE_SECONDS + 2
    assert body["clusters"]["hung"]["ok"] is False
    assert body["clusters"]["hung"]["detail"].startswith(f"slurmrestd at {hung_restd.url} has not answered")
    assert body["clusters"]["demo"]["ok"] is True
    rounds = body["sync"]["clusters"]
    assert set(rounds) == {"demo", "hung"}
    assert rounds["demo"]["ok"] is True
    assert rounds["demo"]["seconds"] < DEADLINE
    assert rounds["demo"]["accounts"] == 1
    assert rounds["demo"]["finished"]
    assert rounds["demo"]["detail"].startswith("1 accounts polled")
    assert (rounds["hung"]["ok"], rounds["hung"]["finished"], rounds["hung"]["seconds"]) == (
        False,
        None,
        None,
    )
    assert rounds["hung"]["running_seconds"] > DEADLINE
    assert rounds["hung"]["detail"].startswith(f"No answer within {DEADLINE} s")
    assert body["sync"]["seconds_ago"] < 5
    assert body["sync"]["stalled"] is False
    assert body["degraded"] == []
    person = User.objects.create(username="nosy", email="nosy@corp.example")
    nosy = Client()
    nosy.force_login(person)
    for answer in (Client().get("/healthz"), nosy.get("/healthz")):
        assert answer.json() == {"ok": True, "degraded": []}
        assert b"hung" not in answer.content
        assert b"sync" not in answer.content

    # Once its slurmrestd goes away the hung task ends with that error, and the next round polls it again.
    busy_for = (timezone.now() - hung_round.started).total_seconds()
    hung_restd.stop()
    assert sync.wait_for_rounds(HUNG_READ_TIMEOUT) == []
    hung_round.refresh_from_db()
    assert (hung_round.ok, hung_round.accounts) == (False, 0)
    assert hung_round.finished is not None
    assert hung_round.seconds > busy_for - 1
    assert hung_round.detail.startswith(f"hung/{ada.name}: "), hung_round.detail
    again = sync.sync_once()
    assert [e.split(":")[0] for e in again.errors] == [f"hung/{ada.name}"], again.errors
    assert SyncRound.objects.get(cluster=hung).finished > hung_round.finished

    print(
        f"sync rounds: demo {min(demo_seconds):.2f}-{max(demo_seconds):.2f} s in {len(demo_seconds)} rounds "
        f"(its {len(job_ids)} jobs settled), hung cut at the {DEADLINE} s deadline in the first round "
        f"({first_seconds:.1f} s) and skipped in the next {len(later)} while still busy ({busy_for:.0f} s); "
        f"each later round {max(later):.2f} s at most"
    )


# Registry rows beside the real one, all on the same Slurm: each adopts and charges the same jobs itself.
TWINS = 6


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_many_clusters_at_once_write_their_records_and_ledger_without_a_locked_database(people, demo_cluster):
    url = demo_cluster.slurmrestd_url
    clusters = [demo_cluster] + [like_demo(demo_cluster, f"twin{n}", url) for n in range(TWINS)]
    crowd = [people() for _ in range(3)]
    for person in crowd:
        for twin in clusters[1:]:
            also_on(twin, person)
    job_ids = [
        sbatch_as(p.name, "-p", "debug", "-t", "1", "-o", "/dev/null", "--wrap", f"sleep {n + 1}")
        for p in crowd
        for n in range(2)
    ]

    seconds: list[float] = []
    give_up = time.monotonic() + 60
    while True:
        started = time.monotonic()
        report = sync.sync_once()
        seconds.append(time.monotonic() - started)
        # Every cluster's thread wrote (records, audit, ledger, its round time) at once: none was refused.
        assert report.errors == [], report.errors
        records = JobRecord.objects.filter(slurm_job_id__in=job_ids)
        if records.count() == len(job_ids) * len(clusters) and all(
            r.state in FINAL and r.ledger == "recorded" for r in records
        ):
            break
        assert time.monotonic() < give_up, sorted((r.cluster.slug, r.slurm_job_id, r.state) for r in records)
        time.sleep(0.3)
    for cluster in clusters:
        for job_id in job_ids:
            assert JobRecord.objects.filter(cluster=cluster, slurm_job_id=job_id).count() == 1
            charged = Usage.objects.filter(cluster=cluster, job_id=job_id)
            assert [u.state for u in charged] == [Usage.State.SETTLED]
    assert SyncRound.objects.filter(ok=True, accounts=len(crowd)).count() == len(clusters)
    print(
        f"{connection.vendor}: {len(clusters)} clusters polled at once for {len(crowd)} people, "
        f"{len(job_ids)} jobs adopted and charged on each in {len(seconds)} rounds "
        f"(longest {max(seconds):.2f} s), 0 writes refused"
    )


@pytest.mark.django_db
def test_a_stalled_loop_is_degraded_for_anyone_and_staff_see_since_when(client, admin_client):
    assert admin_client.get("/healthz").json()["sync"]["last_round_ended"] is None  # no loop has run yet
    ended = timezone.now() - timedelta(minutes=10)
    SyncLoop.objects.create(
        pk=1, round_started=ended, round_finished=ended, seconds=0.2, process="head:4242", interval=10
    )

    assert client.get("/healthz").json() == {"ok": True, "degraded": ["sync"]}
    body = admin_client.get("/healthz").json()
    loop = body["sync"]
    assert (body["degraded"], loop["stalled"], loop["process"]) == (["sync"], True, "head:4242")
    assert loop["seconds_ago"] >= 600
    assert loop["detail"].startswith("No sync round has ended for 60")

    # A single round from cron (`--once`) says nothing about when the next one comes: shown, not judged.
    SyncLoop.objects.filter(pk=1).update(interval=None)
    assert client.get("/healthz").json() == {"ok": True, "degraded": []}
    # A loop that rounds on time is not stalled.
    SyncLoop.objects.filter(pk=1).update(round_finished=timezone.now(), interval=10)
    assert admin_client.get("/healthz").json()["sync"]["stalled"] is False
