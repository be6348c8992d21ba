"""A submit is refused on the grant before anything is provisioned or read, staff included."""

from __future__ import annotations

import json

import pytest

from access.models import Grant, Usage
from accounts import api_tokens
from accounts.models import ClusterAccount, PosixAccount, User
from audit.models import AuditEvent
from clusters.models import Cluster
from jobs.models import JobRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(tmp_path) -> Cluster:
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    # Port 9: were anything to reach slurmrestd, it would fail loudly.
    return Cluster.objects.create(
        slug="c1", name="Cluster One", slurmrestd_url="http://127.0.0.1:9", jwt_key_ref=str(key)
    )


def post(client, person: User, body: dict):
    _, token = api_tokens.issue(person, name="tests")
    return client.post(
        "/v1/clusters/c1/jobs",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@pytest.mark.parametrize("dry_run", [False, True])
def test_staff_without_a_grant_get_no_account_and_nothing_is_read(client, fake, cluster, dry_run):
    staff = User.objects.create(username="ops@corp.example", email="ops@corp.example", is_staff=True)

    body = {"script_path": "/home/ops/job.sh"}
    r = post(client, staff, body) if not dry_run else _dry(client, staff, body)

    assert r.status_code == 403, r.content
    assert r.json()["error"] == {
        "code": "no_grant",
        "message": "You have no access to Cluster One; ask an administrator for a grant.",
    }
    assert fake.calls == []  # no useradd, no sacctmgr, no reading of the script
    assert not PosixAccount.objects.filter(user=staff).exists()
    assert not ClusterAccount.objects.exists()
    assert not JobRecord.objects.exists()
    assert not Usage.objects.exists()
    denied = AuditEvent.objects.get(action="job.submit", actor=staff)
    assert (denied.outcome, denied.reason) == ("denied", "no_grant")
    assert denied.details["dry_run"] is dry_run


def _dry(client, person: User, body: dict):
    _, token = api_tokens.issue(person, name="tests-dry")
    return client.post(
        "/v1/clusters/c1/jobs?dry_run=1",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_a_grant_with_no_partition_is_refused_before_provisioning(client, fake, cluster):
    person = User.objects.create(username="tess@corp.example", email="tess@corp.example")
    Grant.objects.create(cluster=cluster, user=person, terminal=True)

    r = post(client, person, {"script_path": "/home/tess/job.sh"})

    assert r.status_code == 403, r.content
    assert r.json()["error"]["code"] == "partition_not_granted"
    assert r.json()["error"]["message"] == (
        "Your access to Cluster One includes no partition to submit jobs to; "
        "ask an administrator to grant one."
    )
    assert fake.calls == []
    assert not PosixAccount.objects.filter(user=person).exists()


def test_staff_with_a_grant_still_get_their_account_just_in_time(client, fake, cluster, settings):
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = 60300, 60399
    staff = User.objects.create(username="ops@corp.example", email="ops@corp.example", is_staff=True)
    Grant.objects.create(cluster=cluster, user=staff, all_partitions=True)

    post(client, staff, {"script_path": "/home/ops/job.sh"})

    # Past the gate: the account is made, then the script is read as them (the fake has no such file).
    assert "useradd" in fake.programs()
    assert PosixAccount.objects.filter(user=staff).exists()
