from __future__ import annotations

import pytest

from clusterra_site import env
from clusters.models import Cluster


@pytest.mark.django_db
def test_it_reports_the_database_with_no_cluster(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True
    assert body["database"]["ok"] is True
    assert body["clusters"] == {}


@pytest.mark.django_db
def test_a_cluster_that_does_not_answer_is_reported_not_fatal(client, tmp_path):
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    # Port 9 on loopback: nothing listens, so the connection is refused at once.
    Cluster.objects.create(
        slug="gone",
        name="Gone",
        slurmrestd_url="http://127.0.0.1:9",
        jwt_key_ref=str(key),
        api_version="v0.0.38",
    )
    r = client.get("/healthz")
    assert r.status_code == 200
    gone = r.json()["clusters"]["gone"]
    assert gone["ok"] is False
    assert "127.0.0.1:9" in gone["detail"]


@pytest.mark.django_db
def test_it_rejects_post(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.slurm
@pytest.mark.django_db
def test_it_reports_the_real_slurmrestd(client, demo_cluster):
    r = client.get("/healthz")
    demo = r.json()["clusters"]["demo"]
    assert demo["ok"] is True, demo["detail"]
    assert "v0.0.38" in demo["detail"]
    assert "22.05" in demo["detail"]


@pytest.mark.django_db
def test_it_reports_a_working_channel_layer(client):
    body = client.get("/healthz").json()
    assert body["channel_layer"]["ok"] is True
    assert body["channel_layer"]["backend"] in ("redis", "in-memory")
    assert body["degraded"] == []


@pytest.mark.django_db
def test_an_unreachable_channel_layer_is_reported_as_degraded_not_down(client, settings):
    # Port 9 on loopback: nothing listens, so Redis is "down" without touching the shared one.
    settings.CHANNEL_LAYERS = {"default": env.channel_layer("redis://127.0.0.1:9/0")}
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert (body["ok"], body["degraded"]) == (True, ["channel_layer"])
    layer = body["channel_layer"]
    assert (layer["ok"], layer["backend"]) == (False, "redis")
    assert layer["detail"].startswith("The channel layer (redis) cannot be reached: ")
    assert "127.0.0.1:9" in layer["detail"]
    assert "Pages, the API and job submission are not affected" in layer["detail"]
