"""Helpers for the demo tests: ask /demo/ for a link, and find the link in the mail it sent."""

from __future__ import annotations

import re
from typing import Any

LINK = re.compile(r"https?://[^/\s]+(/demo/link/[^/\s]+/)")


def ask_for_link(client: Any, email: str, *, address: str = "198.51.100.20") -> Any:
    return client.post("/demo/", {"email": email}, REMOTE_ADDR=address)


def link_in(message: Any) -> str:
    """The path of the sign-in link in a mailed message."""
    found = LINK.search(message.body)
    assert found, message.body
    return found.group(1)
