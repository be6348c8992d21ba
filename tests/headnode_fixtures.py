"""The pretend head node as a fixture; a plugin: `pytest_plugins = ["tests.headnode_fixtures"]`.

The class itself lives in tests.fake_headnode, which tests import; this module is only loaded as a plugin.
"""

from __future__ import annotations

import pytest

from clusters import headnode
from tests.fake_headnode import FakeHeadNode


@pytest.fixture
def fake(monkeypatch) -> FakeHeadNode:
    """Every head-node command of the test goes to a FakeHeadNode instead of a real host."""
    node = FakeHeadNode()
    monkeypatch.setattr(headnode, "run", node)
    return node
