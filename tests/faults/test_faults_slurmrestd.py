"""Faults of slurmrestd under a burst of submits: stopped, slow, 5xx, a lost answer, a restart.

Everything real but the faults: the console's /v1 route, the real Slurm behind the
proxy of tests.support.faulty_slurmrestd, and slurmrestd processes this module starts itself
(the shared one on :6820 is never touched). After every burst the same invariants hold
against what Slurm itself lists for the person:

- every job Slurm queued has exactly one JobRecord, and no JobRecord claims a job Slurm lacks;
- no reservation is open in the ledger unless it belongs to a job Slurm queued;
- every refused submit got a specific error code and sentence, never a 500.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest
from django.db import connections
from django.test import Client

from access.models import Usage
from clusters import partitions, tokens
from clusters.slurm import SlurmClient
from jobs import sync, tracking
from jobs.models import JobRecord
from tests.conftest import require
from tests.support.faulty_slurmrestd import (
    Fault,
    FaultyProxy,
    OwnSlurmrestd,
    can_run_slurmrestd,
    unreachable_controller_conf,
)
from tests.support.jobs_support import Person

# Threads submit at once, each with its own database connection: the rows must be committed.
pytestmark = [pytest.mark.slurm, pytest.mark.root, pytest.mark.django_db(transaction=True)]

READ_TIMEOUT = 1.5
# The console's answer to a held submit may take the read timeout plus its own work.
ANSWER_BOUND = READ_TIMEOUT + 2.0
CONFIRM_SECONDS = 1.0
# Short, so the shared node's two CPUs are soon free for other tests.
SCRIPT = "#!/bin/sh\n#SBATCH -p debug -t 1\nsleep 1\n"


@pytest.fixture
def fast_faults(settings):
    settings.SLURM_CONNECT_TIMEOUT = 1.0
    settings.SLURM_READ_TIMEOUT = READ_TIMEOUT
    settings.CLUSTERRA_SUBMIT_CONFIRM_SECONDS = CONFIRM_SECONDS


@pytest.fixture
def own_restd_ok():
    reason = can_run_slurmrestd()
    require(not reason, reason)


@pytest.fixture
def controller_down(tmp_path, own_restd_ok):
    """A slurmrestd of this test whose slurmctld is unreachable: its 5xx answers are the real ones."""
    conf = unreachable_controller_conf()
    try:
        with OwnSlurmrestd(tmp_path / "ctld-down.log", conf=conf) as restd:
            yield restd
    finally:
        shutil.rmtree(conf.parent, ignore_errors=True)


@pytest.fixture
def proxy(slurm_env, controller_down):
    with FaultyProxy(slurm_env.url, hold_seconds=READ_TIMEOUT + 1.5, divert_to=controller_down.url) as p:
        yield p


@dataclass
class Answer:
    name: str
    status: int
    body: dict
    seconds: float

    @property
    def code(self) -> str | None:
        return self.body.get("error", {}).get("code")

    @property
    def message(self) -> str:
        return self.body.get("error", {}).get("message", "")


def submit(person: Person, path: str, name: str, *, key: str = "", client: Client | None = None) -> Answer:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    started = time.monotonic()
    r = (client or Client()).post(
        "/v1/clusters/demo/jobs",
        json.dumps({"script_path": path, "name": name}),
        content_type="application/json",
        **person.auth,
        **headers,
    )
    return Answer(name, r.status_code, r.json(), time.monotonic() - started)


def burst(person: Person, path: str, names: list[str]) -> dict[str, Answer]:
    """Submit every name at once, one thread (and one database connection) each."""
    answers: dict[str, Answer] = {}

    def one(name: str) -> None:
        try:
            answers[name] = submit(person, path, name, key=name)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert set(answers) == set(names), f"no answer for {set(names) - set(answers)}"
    return answers


def settle(seconds: float = 15) -> tracking.Report:
    """Sync rounds until no claim is left unresolved (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        report = sync.sync_once()
        if not JobRecord.objects.filter(slurm_job_id__isnull=True).exists():
            return report
        if time.monotonic() > deadline:
            left = list(
                JobRecord.objects.filter(slurm_job_id__isnull=True).values("name", "unconfirmed_since")
            )
            raise AssertionError(f"claims still unresolved after {seconds} s: {left}")
        time.sleep(0.3)


def slurm_jobs(slurm_env, cluster, person: Person, since: float) -> dict[int, str]:
    """The person's jobs submitted since `since`, as the real slurmrestd lists them to their own token."""
    client = SlurmClient(
        slurm_env.url,
        user_name=person.name,
        token=tokens.mint(cluster, person.name, uid=person.uid, gid=person.uid),
        api_version=slurm_env.api_version or None,
    )
    return {
        j.job_id: j.comment
        for j in client.jobs().jobs
        if j.submit_time is not None and j.submit_time.timestamp() >= since - 1
    }


def root_view(person: Person, since: float) -> set[int]:
    """The person's jobs as root's squeue lists them (every state, so jobs that already ended too)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-u", person.name, "-o", "%i|%V"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = set()
    for line in out.split():
        job_id, _, submitted = line.partition("|")
        if time.mktime(time.strptime(submitted, "%Y-%m-%dT%H:%M:%S")) >= since - 1:
            found.add(int(job_id))
    return found


def assert_consistent(slurm_env, cluster, person: Person, since: float) -> dict[int, str]:
    """The invariants of the module docstring; returns Slurm's jobs for the figures."""
    queued = slurm_jobs(slurm_env, cluster, person, since)
    assert set(queued) == root_view(person, since), "the person's token and root see different jobs"
    records = list(JobRecord.objects.filter(person=person.user))
    ids = [r.slurm_job_id for r in records]
    assert None not in ids, "a claim was left half-written"
    assert sorted(ids) == sorted(queued), f"records {sorted(ids)} != Slurm's jobs {sorted(queued)}"
    for record in records:
        assert record.origin == JobRecord.Origin.CONSOLE
        assert queued[record.slurm_job_id] == record.submit_tag, "the record is not the job it tagged"
        usage = Usage.objects.get(pk=record.reservation_id)
        assert usage.job_id == record.slurm_job_id
    open_ = Usage.objects.filter(user=person.user, state__in=[Usage.State.QUEUED, Usage.State.RUNNING])
    leaked = [u.pk for u in open_ if u.job_id not in queued]
    assert leaked == [], f"reservations open for no queued job: {leaked}"
    return queued


def assert_clear(answer: Answer, status: int, code: str) -> None:
    assert (answer.status, answer.code) == (status, code), (answer.name, answer.status, answer.body)
    assert answer.message
    assert "Traceback" not in answer.message
    assert "Demo cluster" in answer.message  # says where, and (below) what became of the job
    assert answer.seconds < ANSWER_BOUND, f"{answer.name} took {answer.seconds:.1f} s"


def test_a_burst_of_submits_through_every_fault_leaves_one_record_per_queued_job(
    people, demo_cluster, slurm_env, proxy, fast_faults
):
    ada = people()
    path = ada.script("burst.sh", SCRIPT)
    demo_cluster.slurmrestd_url = proxy.url
    demo_cluster.save()
    since = time.time()
    # Read now, so the submits below meet the stopped port at the submit itself.
    partitions.partitions(demo_cluster)

    # Stopped: the port refuses; nothing can have been queued, so the budget comes back at once.
    proxy.stop()
    stopped = burst(ada, path, ["ct-stopped-1", "ct-stopped-2", "ct-stopped-3"])
    proxy.start()
    for answer in stopped.values():
        assert_clear(answer, 502, "cluster_unavailable")
        assert "did not answer the submit" in answer.message
        assert "Nothing was queued and your budget reservation was released" in answer.message
    assert not JobRecord.objects.filter(person=ada.user).exists()
    assert not Usage.objects.filter(user=ada.user, state=Usage.State.QUEUED).exists()

    # Each submit of the burst meets its own fault, all at the same time.
    plan = {
        "ct-ok-1": (Fault.NONE, 201, None),
        "ct-slow": (Fault.HOLD, 502, "submit_unconfirmed"),
        "ct-gateway-503": (Fault.GATEWAY_ERROR, 502, "submit_unconfirmed"),
        "ct-ctld-down": (Fault.DIVERT, 502, "cluster_unavailable"),
        "ct-lost": (Fault.LOSE_ANSWER, 502, "submit_unconfirmed"),
        "ct-lost-slow": (Fault.LOSE_ANSWER_SLOWLY, 502, "submit_unconfirmed"),
        "ct-ok-2": (Fault.NONE, 201, None),
    }
    proxy.by_job_name = {name: fault for name, (fault, _, _) in plan.items()}
    started = time.monotonic()
    answers = burst(ada, path, list(plan))
    burst_seconds = time.monotonic() - started
    for name, (_, status, code) in plan.items():
        if code is None:
            assert answers[name].status == 201, answers[name].body
        else:
            assert_clear(answers[name], status, code)
    assert "Nothing was queued" in answers["ct-ctld-down"].message
    assert "Unable to contact slurm controller" in answers["ct-ctld-down"].message
    unconfirmed = [n for n, (_, _, code) in plan.items() if code == "submit_unconfirmed"]
    for name in unconfirmed:
        assert "cannot tell yet whether Slurm queued the job" in answers[name].message
    assert burst_seconds < ANSWER_BOUND + 2

    # While unconfirmed, each such submit holds its reservation, and retrying its key queues nothing.
    held = Usage.objects.filter(user=ada.user, state__in=[Usage.State.QUEUED, Usage.State.RUNNING])
    assert held.count() == 2 + len(unconfirmed)
    retry = submit(ada, path, "ct-lost", key="ct-lost")
    assert (retry.status, retry.code) == (409, "submit_unconfirmed"), retry.body
    proxy.by_job_name = {}

    time.sleep(CONFIRM_SECONDS)
    report = settle()
    queued = assert_consistent(slurm_env, demo_cluster, ada, since)

    assert sorted(queued) == sorted(proxy.queued)  # the two answered, and the two whose answer was lost
    lost = {n: JobRecord.objects.get(person=ada.user, name=n) for n in ("ct-lost", "ct-lost-slow")}
    assert all(r.slurm_job_id in proxy.queued for r in lost.values())
    replay = submit(ada, path, "ct-lost", key="ct-lost")
    assert (replay.status, replay.body["job"]["id"]) == (200, lost["ct-lost"].slurm_job_id), replay.body
    assert JobRecord.objects.filter(person=ada.user).count() == len(queued)
    answers_500 = [a for a in [*stopped.values(), *answers.values()] if a.status >= 500 and not a.code]
    assert answers_500 == []
    released = Usage.objects.filter(user=ada.user, state=Usage.State.RELEASED).count()
    slowest = max(a.seconds for a in answers.values())
    print(
        f"faults survived: {len(proxy.faults) + 1} (stopped, slow, 5xx from a gateway, 5xx with slurmctld "
        f"down, lost answer, lost answer after a timeout); {len(stopped) + len(answers)} submits, "
        f"slowest answer {slowest:.1f} s (read timeout {READ_TIMEOUT:g} s), {len(queued)} queued by Slurm, "
        f"{len(queued)} job records, 0 duplicates, {released} reservations released, 0 leaked, 0 HTTP 500; "
        f"last sync: {report.summary()}"
    )


def test_an_unconfirmed_submit_keeps_its_place_in_the_queue_limit(
    people, demo_cluster, slurm_env, proxy, fast_faults
):
    # One job at a time, queued or running: the job below may start at any moment.
    ada = people(quota={"max_queued_jobs": 1, "max_running_jobs": 1})
    path = ada.script("one.sh", SCRIPT.replace("sleep 1", "sleep 30"))
    demo_cluster.slurmrestd_url = proxy.url
    demo_cluster.save()
    since = time.time()
    proxy.by_job_name = {"ct-lost": Fault.LOSE_ANSWER}

    first = submit(ada, path, "ct-lost")
    second = submit(ada, path, "ct-second")

    assert_clear(first, 502, "submit_unconfirmed")
    # Had the reservation been released, this one would have passed and Slurm would hold two.
    assert (second.status, second.code) == (403, "max_queued_jobs"), second.body
    assert_clear(first, 502, "submit_unconfirmed")
    time.sleep(CONFIRM_SECONDS)
    settle()
    queued = assert_consistent(slurm_env, demo_cluster, ada, since)
    assert len(queued) == 1
    third = submit(ada, path, "ct-third")
    assert third.status == 403, third.body
    assert third.code in ("max_queued_jobs", "max_running_jobs"), third.body
    print("faults survived: lost answer under a queue limit of 1; 3 submits, 1 queued, 1 record, 0 overrun")


def test_a_restarted_slurmrestd_is_used_again_without_anyone_stepping_in(
    people, demo_cluster, slurm_env, own_restd_ok, fast_faults, tmp_path
):
    ada = people()
    path = ada.script("restart.sh", SCRIPT)
    since = time.time()
    restd = OwnSlurmrestd(tmp_path / "slurmrestd.log").start()
    try:
        demo_cluster.slurmrestd_url = restd.url
        demo_cluster.save()
        # All in this thread: its pooled keep-alive connection to slurmrestd outlives the process.
        client = Client()
        before = [submit(ada, path, f"ct-before-{i}", client=client) for i in range(2)]
        assert [a.status for a in before] == [201, 201], [a.body for a in before]
        assert sync.sync_once().errors == []

        restd.kill()
        down = [submit(ada, path, f"ct-down-{i}", client=client) for i in range(2)]
        for answer in down:
            assert_clear(answer, 502, "cluster_unavailable")
            assert "Nothing was queued" in answer.message
        report = sync.sync_once()
        assert any(ada.name in e for e in report.errors)  # said, and nothing decided on no answer
        assert JobRecord.objects.filter(person=ada.user).count() == 2

        restd.start()  # the same port
        after = submit(ada, path, "ct-after", client=client)
        assert after.status == 201, after.body
        assert sync.sync_once().errors == []

        # Killed and back before anyone asked: this thread's pooled connection is to the dead process.
        restd.kill()
        restd.start()
        again = submit(ada, path, "ct-after-quick-restart", client=client)
        assert again.status == 201, again.body
        assert sync.sync_once().errors == []
    finally:
        restd.kill()

    queued = assert_consistent(slurm_env, demo_cluster, ada, since)
    assert len(queued) == 4
    print(
        f"faults survived: slurmrestd killed and restarted mid-run ({restd.starts} starts); 6 submits, "
        f"2 refused while it was down (nothing queued), {len(queued)} queued, {len(queued)} records; "
        "the first submit and sync round after each restart went through"
    )
