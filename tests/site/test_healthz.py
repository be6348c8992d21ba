from __future__ import annotations

import os
import subprocess
import time
from types import SimpleNamespace

import pytest
import requests
from django.db import OperationalError

from accounts.models import User
from clusterra_site import env, views
from clusters import probe
from clusters.models import Cluster
from tests.support import live_server
from tests.support.deployed import free_port


@pytest.fixture(autouse=True)
def _no_recent_probes(monkeypatch):
    monkeypatch.setattr(probe, "_recent", {})


@pytest.fixture
def gone(db, tmp_path) -> Cluster:
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    # Port 9 on loopback: nothing listens, so the connection is refused at once.
    return Cluster.objects.create(
        slug="gone",
        name="Gone",
        slurmrestd_url="http://127.0.0.1:9",
        jwt_key_ref=str(key),
        api_version="v0.0.38",
    )


@pytest.fixture
def probes(monkeypatch) -> list[str]:
    """The slug of every cluster probed for real (slurmrestd asked), in order."""
    asked: list[str] = []
    real = probe.check

    def check(cluster, **kwargs):
        asked.append(cluster.slug)
        return real(cluster, **kwargs)

    monkeypatch.setattr(probe, "check", check)
    return asked


@pytest.mark.django_db
def test_it_reports_the_database_with_no_cluster(admin_client):
    r = admin_client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True
    assert body["database"]["ok"] is True
    assert body["clusters"] == {}


def test_a_cluster_that_does_not_answer_is_reported_not_fatal(admin_client, gone):
    r = admin_client.get("/healthz")
    assert r.status_code == 200
    gone = r.json()["clusters"]["gone"]
    assert gone["ok"] is False
    assert "127.0.0.1:9" in gone["detail"]


def test_anyone_but_staff_learns_only_up_or_degraded_and_costs_slurmrestd_nothing(client, gone, probes):
    person = User.objects.create(username="ada", email="ada@corp.example")
    answers = [client.get("/healthz")]
    client.force_login(person)
    answers.append(client.get("/healthz"))
    for r in answers:
        assert r.status_code == 200
        assert r.json() == {"ok": True, "degraded": []}
        assert b"gone" not in r.content
    assert probes == []


def test_staff_reuse_a_clusters_probe_for_a_few_seconds(client, admin_client, gone, probes, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(probe, "_clock", lambda: now[0])
    for _ in range(20):
        assert client.get("/healthz").status_code == 200
    anonymous = len(probes)
    for _ in range(20):
        assert admin_client.get("/healthz").json()["clusters"]["gone"]["ok"] is False
    staff = len(probes) - anonymous
    assert probes == ["gone"]

    now[0] += probe.RECENT_SECONDS
    admin_client.get("/healthz")
    assert probes == ["gone", "gone"]
    gone.slurmrestd_url = "http://127.0.0.1:7"  # an edited cluster is probed afresh
    gone.save()
    assert "127.0.0.1:7" in admin_client.get("/healthz").json()["clusters"]["gone"]["detail"]
    print(
        f"healthz probes: 20 anonymous calls asked slurmrestd {anonymous} times, 20 staff calls {staff} time "
        f"(a probe is kept {probe.RECENT_SECONDS:g} s)"
    )


def test_a_database_that_does_not_answer_is_503_and_named_only(client, monkeypatch):
    def refused():
        raise OperationalError('connection to server at "db.internal" (10.0.0.5), port 5432 failed')

    monkeypatch.setattr(views, "connection", SimpleNamespace(cursor=refused))
    r = client.get("/healthz")
    assert r.status_code == 503
    assert r.json() == {"ok": False, "degraded": ["database"]}


def test_a_server_started_before_migrate_answers_503_not_500(tmp_path):
    """A newcomer's hand-started worker on a fresh SQLite file: the database answers, its tables are not
    there yet. A load balancer must see 503 (not ready), not an error page that fails in turn."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environment["CLUSTERRA_DATA_DIR"] = str(data)
    port = free_port()
    server = subprocess.Popen(
        live_server.command(port), env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the server did not answer within 30 s"
                time.sleep(0.2)
        assert r.status_code == 503, r.text[:500]
        assert r.json() == {"ok": False, "degraded": ["database"]}
    finally:
        server.terminate()
        said = server.communicate(timeout=15)[1].decode()
    assert "lacks the console's tables (migrate)" in said, said[-2000:]


@pytest.mark.django_db
def test_it_rejects_post(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.slurm
@pytest.mark.django_db
def test_it_reports_the_real_slurmrestd(admin_client, demo_cluster):
    r = admin_client.get("/healthz")
    demo = r.json()["clusters"]["demo"]
    assert demo["ok"] is True, demo["detail"]
    assert "v0.0.38" in demo["detail"]
    assert "22.05" in demo["detail"]


@pytest.mark.django_db
def test_it_reports_a_working_channel_layer(admin_client):
    body = admin_client.get("/healthz").json()
    assert body["channel_layer"]["ok"] is True
    assert body["channel_layer"]["backend"] in ("redis", "in-memory")
    assert body["degraded"] == []


@pytest.mark.django_db
def test_an_unreachable_channel_layer_is_reported_as_degraded_not_down(client, admin_client, settings):
    # Port 9 on loopback: nothing listens, so Redis is "down" without touching the shared one.
    settings.CHANNEL_LAYERS = {"default": env.channel_layer("redis://127.0.0.1:9/0")}
    assert client.get("/healthz").json() == {"ok": True, "degraded": ["channel_layer"]}
    r = admin_client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert (body["ok"], body["degraded"]) == (True, ["channel_layer"])
    layer = body["channel_layer"]
    assert (layer["ok"], layer["backend"]) == (False, "redis")
    assert layer["detail"].startswith("The channel layer (redis) cannot be reached: ")
    assert "127.0.0.1:9" in layer["detail"]
    assert "Pages, the API and job submission are not affected" in layer["detail"]
