"""Fixtures of the file tests: a cluster on this host without Slurm, and real people with real homes on it.

The files app needs no Slurm: the head node is this machine (the local transport) and the people are real
Linux users made by provisioning, so every read and write is the kernel's answer to that person.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import require
from tests.support.fake_headnode import remove_linux_user


@pytest.fixture
def here(db, tmp_path):
    """This host as a cluster whose homes and script roots are /home; slurmrestd is never asked."""
    from clusters.models import Cluster

    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    return Cluster.objects.create(
        slug="here",
        name="This host",
        slurmrestd_url="http://127.0.0.1:9",
        jwt_key_ref=str(key),
        has_accounting=False,
        allowed_script_roots="/home",
    )


@pytest.fixture
def make(here, uid_block):
    """Makes people with a grant on `here` and a real Linux account; removed at the end."""
    from tests.support.jobs_support import make_person

    require(os.geteuid() == 0, "needs root to create Linux users")
    made = []

    def person(**kwargs):
        made.append(make_person(here, **kwargs))
        return made[-1]

    yield person
    for person in made:
        remove_linux_user(person.name)


@pytest.fixture
def lee(make):
    return make()


@pytest.fixture
def sam(make):
    """Another person on the same cluster."""
    return make()
