"""Fixtures of the fault tests: the SSM agent emulator, with every shell it served ended afterwards.

Django is imported inside the fixtures, as in the other folder conftests.
"""

from __future__ import annotations

import pytest_asyncio


@pytest_asyncio.fixture
async def agent(_no_connection_left_open):
    """The agent emulator; the shells still open are ended (a database write) before the connection closes."""
    from tests.support.ssm_agent import AgentEmulator
    from tests.support.terminal_support import end_all_terminals

    async with AgentEmulator() as emulator:
        yield emulator
        await end_all_terminals()
