"""Keeping a worker's open terminals out of Python's full garbage collections.

A terminal is some hundreds of Python objects (its socket's protocol, consumer, tasks, transport)
that live as long as it does. With 2,000 open, a full collection walks all of them: 0.5-0.7 s of a
stopped event loop, every terminal's echo late by as much (bench row 4, the server's -gc.log). CPython
runs one whenever the objects that survived the younger generations reach a quarter of the old
ones, which typing alone gets to within minutes. gc.freeze() moves every object that exists into
a generation no collection visits; done a moment after terminals open, their objects are no
longer walked, and the collections that remain see only what is new.

What is frozen is never collected, so a terminal that ends leaves its cycles behind until they are
thawed. When a quarter of the terminals frozen (and at least THAW_AFTER_ENDED) have ended since,
everything is thawed and collected once, at that moment, and frozen again: the same full
collection CPython would have run, but paid once per quarter of the terminals ending rather than
as typing goes on.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

# How long after the last terminal opened the heap is frozen: a crowd arriving is frozen once.
FREEZE_DELAY = 1.0
# How many frozen terminals must have ended (and what share of them) before they are collected.
THAW_AFTER_ENDED = 64
THAW_SHARE = 0.25

_frozen_terminals = 0
_ended_since_freeze = 0
_freeze: asyncio.TimerHandle | None = None


def terminal_opened(live: int) -> None:
    """A terminal began; `live` terminals run in this process. Freeze once the openings pause."""
    global _freeze
    if _freeze is not None:
        _freeze.cancel()
    _freeze = asyncio.get_running_loop().call_later(FREEZE_DELAY, _freeze_now, live)


def terminal_ended(live: int) -> None:
    """A terminal ended, `live` still run: collect the ended ones once enough of the frozen ones have."""
    global _ended_since_freeze
    if not gc.get_freeze_count():
        return
    _ended_since_freeze += 1
    if _ended_since_freeze >= max(THAW_AFTER_ENDED, THAW_SHARE * _frozen_terminals):
        _thaw_and_collect(live)


def _freeze_now(live: int) -> None:
    global _freeze, _frozen_terminals, _ended_since_freeze
    _freeze = None
    # The young generations first: what died while the terminals opened is not frozen with them.
    gc.collect(1)
    gc.freeze()
    _frozen_terminals = live
    _ended_since_freeze = 0


def _thaw_and_collect(live: int) -> None:
    global _frozen_terminals, _ended_since_freeze
    began = time.perf_counter()
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    log.info(
        "terminals: collected what %d ended terminals left (%d objects) in %.0f ms",
        _ended_since_freeze,
        found,
        1000 * (time.perf_counter() - began),
    )
    _frozen_terminals = live
    _ended_since_freeze = 0
