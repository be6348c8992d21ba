"""/v1 outside the job flow: token auth, the error shape, me / clusters / partitions / quota, bad requests."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from access.models import Grant, Quota
from accounts import api_tokens
from accounts.models import PosixAccount, User
from clusters.models import Cluster
from jobs.models import JobRecord
from tests.support.jobs_support import assert_matches

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline(db, tmp_path):
    """A cluster whose slurmrestd never answers: enough for everything decided before Slurm is asked."""
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    return Cluster.objects.create(
        slug="offline",
        name="Offline cluster",
        slurmrestd_url="http://127.0.0.1:9",
        api_version="v0.0.38",
        jwt_key_ref=str(key),
        allowed_script_roots="/home\n/scratch",
    )


@pytest.fixture
def grace(db, offline):
    person = User.objects.create(username="grace", email="grace@example.org", first_name="Grace")
    Grant.objects.create(cluster=offline, user=person, partitions="cpu gpu")
    _, raw = api_tokens.issue(person, name="tests")
    person.auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    return person


# --- auth and the error shape ----------------------------------------------------------------------


def test_it_requires_a_bearer_token(client, grace):
    r = client.get("/v1/me")
    assert r.status_code == 401
    assert r["WWW-Authenticate"] == 'Bearer realm="clusterra"'
    assert r.json()["error"]["code"] == "unauthorized"
    assert_matches("Error", r.json())


@pytest.mark.parametrize("header", ["Bearer ct_not-a-real-token", "Bearer ", "Basic Z3JhY2U6cHc=", "ct_abc"])
def test_it_refuses_a_token_it_does_not_know(client, grace, header):
    r = client.get("/v1/me", HTTP_AUTHORIZATION=header)
    assert r.status_code == 401
    assert r.json()["error"]["code"] in ("unauthorized", "invalid_token")


def test_a_revoked_token_stops_working(client, grace):
    token = grace.api_tokens.get()
    assert client.get("/v1/me", **grace.auth).status_code == 200
    api_tokens.revoke(token)
    r = client.get("/v1/me", **grace.auth)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_token"


def test_an_expired_token_stops_working(client, grace):
    grace.api_tokens.update(expires=timezone.now())
    assert client.get("/v1/me", **grace.auth).status_code == 401


def test_a_wrong_method_is_405_in_the_error_shape(client, grace):
    r = client.put("/v1/clusters/offline/jobs", **grace.auth)
    assert r.status_code == 405
    assert r["Allow"] == "GET, POST"
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_an_unknown_cluster_is_404(client, grace):
    r = client.get("/v1/clusters/nowhere/jobs", **grace.auth)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "There is no cluster 'nowhere'; `GET /v1/clusters` lists yours."


# --- who and where ----------------------------------------------------------------------------------


def test_me_says_who_the_token_belongs_to(client, grace):
    r = client.get("/v1/me", **grace.auth)
    assert r.status_code == 200
    assert r.json() == {
        "username": "grace",
        "email": "grace@example.org",
        "name": "Grace",
        "is_staff": False,
        "posix_account": None,
        "clusters": ["offline"],
    }
    assert_matches("Me", r.json())


def test_clusters_lists_only_those_the_policy_lets_you_use(client, grace, offline):
    Cluster.objects.create(slug="other", name="Other", slurmrestd_url="http://127.0.0.1:9", jwt_key_ref="/x")
    r = client.get("/v1/clusters", **grace.auth)
    assert r.status_code == 200
    assert [c["id"] for c in r.json()["clusters"]] == ["offline"]
    assert r.json()["clusters"][0]["granted_partitions"] == ["cpu", "gpu"]
    assert_matches("ClusterList", r.json())
    other = client.get("/v1/clusters/other/quota", **grace.auth)
    assert other.status_code == 403
    assert other.json()["error"] == {
        "code": "no_grant",
        "message": "You have no access to Other; ask an administrator for a grant.",
    }


def test_quota_shows_limits_use_and_renewal(client, grace, offline):
    Quota.objects.create(cluster=offline, user=grace, gpu_hours=10, max_running_jobs=3, period="month")
    r = client.get("/v1/clusters/offline/quota", **grace.auth)
    assert r.status_code == 200
    (quota,) = r.json()["quotas"]
    assert (quota["scope"], quota["gpu_hours_limit"], quota["gpu_hours_left"], quota["max_running_jobs"]) == (
        "you",
        10.0,
        10.0,
        3,
    )
    assert_matches("QuotaList", r.json())


def test_partitions_of_a_cluster_that_does_not_answer_is_502(client, grace):
    r = client.get("/v1/clusters/offline/partitions", **grace.auth)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "cluster_unavailable"
    assert r.json()["error"]["message"].startswith("Offline cluster did not answer: ")


@pytest.mark.slurm
@pytest.mark.root
def test_partitions_show_state_nodes_and_gpus_read_live(client, ada):
    r = client.get("/v1/clusters/demo/partitions", **ada.auth)
    assert r.status_code == 200, r.content
    assert_matches("PartitionList", r.json())
    by_name = {p["name"]: p for p in r.json()["partitions"]}
    assert set(by_name) == {"cpu", "gpu", "debug", "wide"}
    assert by_name["cpu"]["default"] is True
    # wide: the real node and four paper nodes that are always down (scripts/slurm-up.sh).
    assert (by_name["wide"]["nodes"]["total"], by_name["wide"]["nodes"]["other"]) == (5, 4)
    assert by_name["debug"]["max_time_limit"] == 30
    assert by_name["gpu"]["gpus"]["total"] == 2
    assert by_name["gpu"]["state"] == "UP"
    assert all(p["granted"] for p in by_name.values())


# --- bad submissions are refused before anything is touched ----------------------------------------


def submit(client, person, body, cluster="offline"):
    return client.post(
        f"/v1/clusters/{cluster}/jobs", json.dumps(body), content_type="application/json", **person.auth
    )


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("job.sh", "must be an absolute path"),
        ("/home/grace/../root/job.sh", "is not normalised"),
        ("/home/grace/./job.sh", "is not normalised"),
        ("/home//grace/job.sh", "is not normalised"),
        ("/home/grace/job.sh\x00.txt", "contains a NUL byte"),
        ("/home/grace/job\n.sh", "contains a control character"),
        ("/etc/passwd", "is outside the folders Offline cluster runs scripts from (/home, /scratch)"),
        ("/homework/job.sh", "is outside the folders"),
        ("", "Give exactly one of script_path"),
    ],
)
def test_a_bad_script_path_is_400_before_anything_else_happens(client, grace, path, words, monkeypatch):
    from clusters import headnode

    monkeypatch.setattr(headnode, "run", lambda *a, **k: pytest.fail("the head node must not be asked"))
    r = submit(client, grace, {"script_path": path})
    assert r.status_code == 400, r.content
    assert words in r.json()["error"]["message"]
    assert not JobRecord.objects.exists()
    assert not PosixAccount.objects.filter(user=grace).exists()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"script_path": "/home/g/x.sh", "nodes": 0}, "nodes must be a positive whole number"),
        ({"script_path": "/home/g/x.sh", "gpus": -1}, "gpus must be a whole number, 0 or more"),
        (
            {"script_path": "/home/g/x.sh", "time_limit": "soon"},
            "time_limit: time 'soon' is not a Slurm time",
        ),
        ({"script_path": "/home/g/x.sh", "time_limit": 0}, "time_limit must be at least 1 minute"),
        ({"script_path": "/home/g/x.sh", "partition": "a b"}, "partition must be a partition name"),
        (
            {"script_path": "/home/g/x.sh", "working_directory": "tmp"},
            "working_directory must be an absolute path",
        ),
        ({"script_path": "/home/g/x.sh", "nodes": True}, "nodes must be a positive whole number"),
        ({"script_path": "/home/g/x.sh", "colour": "blue"}, "Unknown field 'colour'"),
        ({"script_path": 7}, "script_path must be a string"),
    ],
)
def test_bad_fields_are_400_naming_the_field(client, grace, body, words):
    r = submit(client, grace, body)
    assert r.status_code == 400
    assert words in r.json()["error"]["message"]


def test_a_body_that_is_not_json_is_400_and_other_media_types_415(client, grace):
    r = client.post("/v1/clusters/offline/jobs", "{nope", content_type="application/json", **grace.auth)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"
    r = client.post("/v1/clusters/offline/jobs", {"script_path": "/home/x"}, **grace.auth)
    assert r.status_code == 415


def test_listing_filters_are_checked(client, grace):
    r = client.get("/v1/clusters/offline/jobs?state=SLEEPING", **grace.auth)
    assert r.status_code == 400
    assert "is not a Slurm job state" in r.json()["error"]["message"]
    r = client.get("/v1/clusters/offline/jobs?page=0", **grace.auth)
    assert r.status_code == 400
