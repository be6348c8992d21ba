"""The host's confinement table (terminal.confine_host), saved before a test changes it and put back after.

`manage.py confine_shells` replaces the console's nftables table whole, opening only the ports of the
clusters in the database it runs against: a test that runs it (or runs `make demo`, which does) would
otherwise leave the next tests' people unable to reach the Slurm they use.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from terminal import confine_host


def saved_table() -> str:
    """The console's nftables table as it is (a running demo's), or "" when there is none."""
    listed = subprocess.run(
        ["nft", "list", "table", "inet", confine_host.TABLE], capture_output=True, text=True, check=False
    )
    return listed.stdout if listed.returncode == 0 else ""


def restore_table(saved: str) -> None:
    """Puts `saved` back in one transaction; "" removes the table."""
    restore = f"table inet {confine_host.TABLE} {{}}\ndelete table inet {confine_host.TABLE}\n{saved}"
    subprocess.run(["nft", "-f", "-"], input=restore, text=True, check=True)


@contextmanager
def table_kept() -> Iterator[None]:
    before = saved_table()
    try:
        yield
    finally:
        restore_table(before)
