"""Fixtures for the demo tests (accounts/, browser/); loaded by tests/conftest.py.

Helpers the tests import live in tests.support.demo_support, so this module is imported only
as a plugin (pytest rewrites its asserts). Django is imported inside the fixtures: the root
conftest loads this module even for protocol-only runs (`-p no:django`).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from clusters.models import Cluster


@pytest.fixture
def demo_settings(settings):
    """The settings `make demo` runs with, small numbers where tests count."""
    settings.CLUSTERRA_DEMO_CLUSTER = "demo"
    settings.CLUSTERRA_DEMO_OPEN = True
    settings.CLUSTERRA_DEMO_DAYS = 7
    settings.CLUSTERRA_DEMO_MAX_PEOPLE = 10
    settings.CLUSTERRA_DEMO_SIGNUPS_PER_HOUR = 3
    settings.CLUSTERRA_DEMO_LINK_MINUTES = 60
    settings.CLUSTERRA_DEMO_PARTITION = "debug"
    settings.CLUSTERRA_DEMO_MAX_RUNNING_JOBS = 2
    settings.CLUSTERRA_DEMO_MAX_WALLTIME = 10
    settings.CLUSTERRA_DEMO_CPU_HOURS_PER_DAY = 1.0
    return settings


@pytest.fixture
def signup_cluster(db, demo_settings, tmp_path) -> Cluster:
    """The demo cluster's registry row. No slurmrestd answers: signing up never needs one."""
    from clusters.models import Cluster

    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    return Cluster.objects.create(
        slug="demo",
        name="Demo cluster",
        slurmrestd_url="http://127.0.0.1:9",
        api_version="v0.0.38",
        jwt_key_ref=str(key),
    )


@pytest.fixture
def seeded_demo(signup_cluster) -> Cluster:
    from django.core.management import call_command

    call_command("seed_demo", cluster="demo", stdout=io.StringIO())
    return signup_cluster
