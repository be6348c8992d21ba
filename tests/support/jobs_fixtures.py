"""Fixtures for the jobs, API, sync, CLI, fault and browser tests; loaded by tests/conftest.py.

Helpers the tests import live in tests.support.jobs_support; this module holds only fixtures,
so pytest can load it as a plugin before anything imports it. Django (and what needs it) is
imported inside the fixtures: the root conftest loads this module even with `-p no:django`.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from tests.conftest import RELEASES, require
from tests.support import slurm_commands
from tests.support.fake_headnode import free_uid_block, remove_linux_user
from tests.support.slurm_shell import Release

if TYPE_CHECKING:
    from tests.support.jobs_support import Person


@pytest.fixture(autouse=True)
def _slurm_commands_of_the_release(request):
    """The helpers' squeue, sacct, scancel… are those of the release a test using `slurm_env` runs on.

    Set up before the test's other fixtures and torn down after them, so that `people` still empties
    the right queue at the end.
    """
    if "slurm_env" not in request.fixturenames:
        yield
        return
    env = request.getfixturevalue("slurm_env")
    slurm_commands.use(Release() if env.release == RELEASES[0] else Release.of(env))
    yield
    slurm_commands.use(Release())


@pytest.fixture
def uid_block(settings):
    require(os.geteuid() == 0, "needs root to create Linux users")
    start = free_uid_block()
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = start, start + 19
    return start


class Pool:
    """Linux users made once per test session and handed out in turn.

    Creating a user and its Slurm association costs about a second; finding them
    already there costs a tenth. Slots rotate so that a UID comes back only several
    tests later: Slurm still lists a user's jobs for MinJobAge after they end, and the
    next holder must not see them as new (the sync loop ignores jobs older than the account).
    """

    SIZE = 10

    def __init__(self) -> None:
        self.start = free_uid_block(20)
        self.tag = secrets.token_hex(3)
        self.turn = 0
        self.made: set[str] = set()

    def take(self) -> tuple[str, int]:
        n = self.turn % self.SIZE
        self.turn += 1
        return f"ct{self.tag}p{n}", self.start + n


_pool: Pool | None = None


@pytest.fixture(scope="session")
def person_pool():
    """The one pool of the session (each test module imports this fixture; they all share it)."""
    global _pool
    if os.geteuid() != 0:
        yield None
        return
    if _pool is None:
        _pool = Pool()
    yield _pool
    for name in sorted(_pool.made):
        remove_linux_user(name)
    _pool.made.clear()


def quiesce(person: Person) -> None:
    """Cancel the person's jobs, wait for the queue to let go of them, and empty their home."""
    from tests.support.jobs_support import squeue

    subprocess.run([slurm_commands.command("scancel"), "-u", person.name], capture_output=True, check=False)
    deadline = time.monotonic() + 15
    while squeue(person.name) and time.monotonic() < deadline:
        time.sleep(0.1)
    for entry in person.home.iterdir():
        if not entry.name.startswith("."):
            subprocess.run(["rm", "-rf", "--", str(entry)], check=False)


@pytest.fixture
def people(demo_cluster, person_pool, settings):
    """Makes real people on demand (from the session's pool); their jobs and files go afterwards."""
    from clusters import partitions
    from tests.support.jobs_support import make_person

    require(person_pool is not None, "needs root to create Linux users")
    # Anyone else provisioned in the test gets a UID beside the pool's, never one of them.
    settings.CLUSTERRA_UID_MIN = person_pool.start + Pool.SIZE
    settings.CLUSTERRA_UID_MAX = person_pool.start + 19
    made: list[Person] = []
    partitions.forget()

    def make(**kwargs) -> Person:
        slot = person_pool.take()
        person_pool.made.add(slot[0])
        person = make_person(demo_cluster, slot=slot, **kwargs)
        made.append(person)
        return person

    yield make
    for person in made:
        quiesce(person)
    partitions.forget()


@pytest.fixture
def ada(people) -> Person:
    return people()
