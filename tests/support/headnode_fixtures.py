"""The pretend head node as a fixture, for the accounts and access tests; loaded by tests/conftest.py.

The class itself lives in tests.support.fake_headnode, which tests import; this module holds only the fixture.
"""

from __future__ import annotations

import pytest

from clusters import headnode
from tests.support.fake_headnode import FakeHeadNode


@pytest.fixture
def fake(monkeypatch) -> FakeHeadNode:
    """Every head-node command of the test goes to a FakeHeadNode instead of a real host."""
    node = FakeHeadNode()
    monkeypatch.setattr(headnode, "run", node)
    return node
