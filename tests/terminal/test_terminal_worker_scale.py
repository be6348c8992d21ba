"""What lets one worker hold thousands of terminals: no thread per shell, descriptors, a frozen heap."""

from __future__ import annotations

import asyncio
import gc
import os
import pty
import resource
import threading
import weakref

import pytest

from terminal import apps, heap
from terminal.transports.local import Child


async def _child(*argv: str) -> Child:
    master, slave = pty.openpty()
    try:
        return Child(list(argv), terminal=slave, env={"PATH": "/usr/bin:/bin"})
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.asyncio
async def test_it_hears_a_shell_end_without_a_thread_per_shell():
    threads = threading.active_count()
    children = [await _child("/bin/sh", "-c", f"sleep 0.2; exit {n}") for n in range(20)]
    # asyncio's own watcher (Python 3.11) would have started one waitpid thread for each of them.
    assert threading.active_count() == threads
    statuses = await asyncio.wait_for(asyncio.gather(*(child.wait() for child in children)), 10)
    assert statuses == list(range(20))
    assert [child.returncode for child in children] == list(range(20))


@pytest.mark.asyncio
async def test_it_says_which_signal_ended_a_shell():
    child = await _child("/bin/sleep", "30")
    assert child.returncode is None
    os.kill(child.pid, 9)
    assert await asyncio.wait_for(child.wait(), 10) == -9
    # Waiting again answers the same, as asyncio's Process.wait does.
    assert await child.wait() == -9


def test_it_raises_the_soft_limit_on_open_files_towards_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        now = apps.allow_many_descriptors(wanted=4096)
        assert now == (4096 if hard == resource.RLIM_INFINITY else min(4096, hard))
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.asyncio
async def test_open_terminals_are_frozen_and_ended_ones_collected(monkeypatch):
    monkeypatch.setattr(heap, "FREEZE_DELAY", 0.01)
    monkeypatch.setattr(heap, "THAW_AFTER_ENDED", 2)
    # The module's own count starts from nothing here, and is put back as it was afterwards.
    monkeypatch.setattr(heap, "_frozen_terminals", 0)
    monkeypatch.setattr(heap, "_ended_since_freeze", 0)
    gc.unfreeze()

    class Cycle:
        pass

    try:
        # Two terminals open in a crowd: one freeze, shortly after the last.
        heap.terminal_opened(1)
        left = Cycle()
        left.me = left
        heap.terminal_opened(2)
        assert gc.get_freeze_count() == 0
        await asyncio.sleep(0.1)
        assert gc.get_freeze_count() > 0
        # Frozen, a terminal's cycles outlive it: no collection walks them.
        gone = weakref.ref(left)
        del left
        gc.collect()
        assert gone() is not None
        # Until enough terminals have ended: then they are thawed, collected, and the rest frozen again.
        heap.terminal_ended(1)
        assert gone() is not None
        heap.terminal_ended(0)
        assert gone() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
