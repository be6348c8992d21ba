"""Fixtures of the jobs tests: the owner of a script on the head node, a real Linux user of this host.

Django is imported inside the fixtures: test_directives also runs with `-p no:django`.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import require
from tests.support.fake_headnode import remove_linux_user


@pytest.fixture
def owner(cluster, uid_block):
    """A person with no grant on the test module's `cluster`, who owns scripts in their own home."""
    from tests.support.jobs_support import make_person

    require(os.geteuid() == 0, "needs root to read as another user")
    person = make_person(cluster, grant=False)
    yield person
    remove_linux_user(person.name)
