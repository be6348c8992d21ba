"""The dashboard's use chart: drawn once and kept briefly, drawn again at once after this process settles a
job, and within CHART_SECONDS after another process (the sync loop) did."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from access import present
from access.models import Usage
from accounts.models import User
from clusters.models import Cluster

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_charts_kept():
    present._charts.clear()
    yield
    present._charts.clear()


@pytest.fixture
def ada():
    return User.objects.create(username="ada@example.test", email="ada@example.test")


@pytest.fixture
def cluster():
    return Cluster.objects.create(slug="alpha", name="Alpha")


def settle(person, cluster, cpu_hours: float) -> Usage:
    return Usage.objects.create(
        cluster=cluster,
        user=person,
        username="ada",
        state=Usage.State.SETTLED,
        used_cpu_hours=cpu_hours,
        ended_at=timezone.now() - timedelta(hours=1),
    )


def chart(person, cluster):
    return present.use_chart(person, cluster, timezone.now() - timedelta(days=30))


def test_a_chart_drawn_a_moment_ago_costs_no_query(ada, cluster):
    settle(ada, cluster, 3)
    assert chart(ada, cluster)["total_cpu"] == "3"
    with CaptureQueriesContext(connection) as asked:
        again = chart(ada, cluster)
    assert again["total_cpu"] == "3"
    assert len(asked) == 0


def test_a_job_settled_here_shows_at_once(ada, cluster):
    settle(ada, cluster, 3)
    assert chart(ada, cluster)["total_cpu"] == "3"
    settle(ada, cluster, 2)
    assert chart(ada, cluster)["total_cpu"] == "5"


def test_a_job_settled_elsewhere_shows_within_chart_seconds(ada, cluster, monkeypatch):
    usage = settle(ada, cluster, 3)
    assert chart(ada, cluster)["total_cpu"] == "3"
    # An UPDATE sends no signal: what another process's write looks like from here.
    Usage.objects.filter(pk=usage.pk).update(used_cpu_hours=7)
    assert chart(ada, cluster)["total_cpu"] == "3"
    monkeypatch.setattr(present, "CHART_SECONDS", 0.05)
    time.sleep(0.1)
    assert chart(ada, cluster)["total_cpu"] == "7"


def test_each_person_sees_their_own_chart(ada, cluster):
    bob = User.objects.create(username="bob@example.test", email="bob@example.test")
    settle(ada, cluster, 3)
    settle(bob, cluster, 11)
    assert chart(ada, cluster)["total_cpu"] == "3"
    assert chart(bob, cluster)["total_cpu"] == "11"
    assert chart(ada, cluster)["total_cpu"] == "3"
