"""Fixtures of the terminal tests: the SSM agent emulator, this host as a cluster, a real person with a grant.

Django is imported inside the fixtures: the SSM protocol tests of this folder also run with `-p no:django`.
"""

from __future__ import annotations

import pytest
import pytest_asyncio


@pytest_asyncio.fixture
async def agent():
    """The SSM agent emulator: the data channel's protocol over a real PTY (a module may define its own)."""
    from tests.support.ssm_agent import AgentEmulator

    async with AgentEmulator() as emulator:
        yield emulator


@pytest.fixture
def cluster():
    """This machine as a cluster whose terminals are local PTYs (a test module may define its own)."""
    from tests.support.terminal_support import local_cluster

    return local_cluster()


@pytest.fixture
def linux_person(settings, cluster):
    """A person of a free UID block with a terminal grant on `cluster`; their Linux user goes afterwards."""
    from tests.support.terminal_support import forget_real_person, grant_terminal, new_real_person

    person, name = new_real_person(settings)
    grant_terminal(person, cluster)
    yield person
    forget_real_person(name)


@pytest_asyncio.fixture
async def real_person(linux_person, _no_connection_left_open):
    """A person with a terminal grant; every shell still open is ended before their Linux user goes.

    Ending the shells writes to the database, so it comes before the thread's connection is closed.
    """
    from tests.support.terminal_support import end_all_terminals

    yield linux_person
    await end_all_terminals()
