from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model


@pytest.fixture
def person(db):
    return get_user_model().objects.create_user("ada", "ada@example.org", "pw-ada-123456")


@pytest.mark.django_db
def test_it_requires_sign_in(client):
    r = client.get("/")
    assert r.status_code == 302
    assert "login" in r["Location"]


def test_it_says_when_no_cluster_is_registered(client, person):
    client.force_login(person)
    r = client.get("/")
    assert r.status_code == 200
    assert b"No cluster is registered yet" in r.content


@pytest.mark.slurm
def test_it_shows_partitions_and_nodes_read_live(client, person, demo_cluster):
    client.force_login(person)
    r = client.get("/")
    page = r.content.decode()
    assert "Not answering" not in page, page
    for partition in ("cpu", "gpu", "debug"):
        assert f"<td>{partition}" in page
    assert "(default)" in page
    assert "localhost" in page
    assert "30 min" in page  # debug's MaxTime, read from slurmrestd
