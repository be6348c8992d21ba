"""Fixtures of the accounts tests: a person, and a real person provisioned on this machine.

Django is imported inside the fixtures: test_oidc_presets also runs with `-p no:django`.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import require
from tests.support.fake_headnode import ct_email, free_uid_block, remove_linux_user


@pytest.fixture
def jane(db):
    """A person with no grant and no POSIX account yet (a test module may define its own)."""
    from accounts.models import User

    return User.objects.create(username="jane", email="jane@corp.example")


@pytest.fixture
def real_person(db, settings):
    """A person of a free UID block whose Linux user (and Slurm association) exist for real on this host."""
    from accounts import posix
    from accounts.models import User

    require(os.geteuid() == 0, "needs root to create Linux users")
    start = free_uid_block()
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = start, start + 19
    person = User.objects.create(username=ct_email(), email=ct_email())
    name = posix.ensure_account(person).username
    assert name.startswith("ct")
    yield person
    remove_linux_user(name)
