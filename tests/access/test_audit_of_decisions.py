"""A decision writes nothing: looking around writes no audit event, a refused request writes one."""

from __future__ import annotations

import pytest

from access.models import Grant, Quota
from accounts import api_tokens
from accounts.models import PosixAccount, User
from audit.models import AuditEvent
from clusters.models import Cluster
from jobs.models import JobRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline(db, tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"k" * 32)
    return Cluster.objects.create(
        slug="off", name="Offline", slurmrestd_url="http://127.0.0.1:9", jwt_key_ref=str(key)
    )


@pytest.fixture
def lin(db):
    person = User.objects.create_user("lin", "lin@example.org", "pw-lin-123456")
    PosixAccount.objects.create(user=person, username="lin", uid=60321, gid=60321)
    return person


def bearer(person: User) -> dict[str, str]:
    _, raw = api_tokens.issue(person, name="tests")
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_browsing_as_a_person_writes_no_audit_event(client, lin, offline):
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True, terminal=True)
    Quota.objects.create(cluster=offline, user=lin, gpu_hours=10, max_running_jobs=4)
    JobRecord.objects.create(
        cluster=offline, person=lin, posix_user="lin", slurm_job_id=1000, state="COMPLETED", name="done"
    )
    auth = bearer(lin)
    client.force_login(lin)
    before = AuditEvent.objects.count()

    pages = [
        "/",
        "/clusters/off/submit/",
        "/clusters/off/jobs/",
        "/clusters/off/jobs/data",
        "/clusters/off/jobs/1000/",
        "/clusters/off/terminal/",
    ]
    for _ in range(3):
        for page in pages:
            assert client.get(page).status_code == 200, page
    api = [
        "/v1/me",
        "/v1/clusters",
        "/v1/clusters/off/jobs",
        "/v1/clusters/off/jobs/1000",
        "/v1/clusters/off/jobs/1000/output",
        "/v1/clusters/off/quota",
    ]
    for _ in range(3):
        for path in api:
            assert client.get(path, **auth).status_code == 200, path

    assert AuditEvent.objects.count() == before


def test_a_refused_page_writes_one_event_with_the_decision(client, lin, offline):
    client.force_login(lin)

    r = client.get("/clusters/off/jobs/")

    assert r.status_code == 403
    [event] = AuditEvent.objects.all()
    assert (event.action, event.outcome, event.reason, event.actor_name, event.cluster) == (
        "job.view",
        "denied",
        "no_grant",
        "lin",
        "off",
    )
    assert event.message == "You have no access to Offline; ask an administrator for a grant."
    assert event.details["action"] == "job.view"


def test_a_refused_v1_request_writes_one_event_with_the_decision(client, lin, offline):
    auth = bearer(lin)
    before = AuditEvent.objects.count()

    r = client.get("/v1/clusters/off/quota", **auth)

    assert r.status_code == 403
    assert AuditEvent.objects.count() == before + 1
    event = AuditEvent.objects.latest("id")
    assert (event.action, event.outcome, event.reason, event.target) == (
        "cluster.view",
        "denied",
        "no_grant",
        "off",
    )
    assert event.message == r.json()["error"]["message"]


def test_someone_elses_job_answers_404_and_the_refusal_is_written(client, lin, offline):
    other = User.objects.create(username="other")
    JobRecord.objects.create(
        cluster=offline, person=other, posix_user="other", slurm_job_id=77, state="RUNNING"
    )
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    client.force_login(lin)

    assert client.get("/clusters/off/jobs/77/").status_code == 404
    assert client.post("/clusters/off/jobs/77/cancel").status_code == 404

    view, cancel = AuditEvent.objects.order_by("id")
    assert (view.action, view.target, view.reason, view.details["job_owner"]) == (
        "job.view",
        "job 77",
        "not_your_job",
        "other",
    )
    assert (cancel.action, cancel.target, cancel.outcome, cancel.reason) == (
        "job.cancel",
        "job 77",
        "denied",
        "not_your_job",
    )
