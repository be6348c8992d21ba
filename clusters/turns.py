"""Turns at a web worker's interpreter: how many requests run their Python at once, and the calls that
give their turn back while they wait on a head node.

A worker is one interpreter lock. Every request that holds a thread and has work to do competes for it,
and each hand-over between threads (at every database round trip) costs CPU: bench row 8 measured 7.2 ms
of worker CPU per request with ten threads against 5.9 ms with two. Few threads would stall every page
behind a few slow calls, though: a script read over SSM or a first provisioning takes seconds.

So the worker keeps its many threads (clusterra_site.asgi), and a request takes a turn before its
Django work starts (`Turns.taken`); at most `count` requests hold one. A call that waits on a head node
or on slurmrestd gives the turn back (`waiting_elsewhere`) and the request finishes without one: it
never waits for a turn again, so a turn is only ever waited for by a request that holds nothing (no
database row, no lock), and no request holding a turn ever waits for one that does not.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

_here = threading.local()


class Turns:
    """`count` turns, shared by the threads of one worker, given in the order they were asked for.

    First come, first served: a turn given back goes straight to the thread that has waited longest, so a
    request that just arrived never takes it first (threading.Semaphore lets it, and the load's slowest
    answers were then the ones passed over again and again).
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._lock = threading.Lock()
        self._free = count
        self._waiting: deque[threading.Lock] = deque()

    @contextmanager
    def taken(self) -> Iterator[None]:
        """Hold a turn for the block, unless a call in it gives the turn back first."""
        self._take()
        _here.turns = self
        try:
            yield
        finally:
            if getattr(_here, "turns", None) is self:
                _here.turns = None
                self.give_back()

    def _take(self) -> None:
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiting.append(gate)
        gate.acquire()  # opened by give_back when this thread is first in line

    def give_back(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().release()
            else:
                self._free += 1


@contextmanager
def waiting_elsewhere() -> Iterator[None]:
    """Around a call that waits on another machine: the thread's turn, if it holds one, goes back now."""
    turns = getattr(_here, "turns", None)
    if turns is not None:
        _here.turns = None
        turns.give_back()
    yield
