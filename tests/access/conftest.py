"""Fixtures of the access tests: a cluster, a group with a grant on it, and one of its members.

A test module that means something else by `cluster`, `ml_team` or `jane` defines its own.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from access.models import Grant
from accounts.models import User
from clusters.models import Cluster


@pytest.fixture
def cluster(db) -> Cluster:
    # Port 9 on loopback: nothing listens, so nothing here can reach a real slurmrestd by accident.
    return Cluster.objects.create(slug="c1", name="Cluster One", slurmrestd_url="http://127.0.0.1:9")


@pytest.fixture
def ml_team(cluster) -> Group:
    team = Group.objects.create(name="ml-team")
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    return team


@pytest.fixture
def jane(ml_team) -> User:
    user = User.objects.create(username="jane")
    user.groups.add(ml_team)
    return user
