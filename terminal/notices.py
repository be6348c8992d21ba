"""Hearing offboarding notices through the channel layer, and standing in for it while it is away.

Offboarding tells live terminals to close through a channel-layer group (Redis with several workers).
When the layer cannot be reached, a terminal keeps running, and this worker asks the database instead,
every CHECK_SECONDS, whether the people of its terminals are still active (terminal.live registers that
check with `check_with`): Redis carries the notice but the database holds the truth, so a Redis outage
costs seconds of delay, not people's shells.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

# While the channel layer cannot be reached: how often the database is asked who was offboarded,
# how long one layer call may take (a Redis that drops packets would otherwise hang it for minutes),
# and how long to wait between attempts to reach it again.
CHECK_SECONDS = 2.0
LAYER_TIMEOUT = 2.0
RETRY_FIRST, RETRY_MAX = 0.5, 5.0

_check_people: Callable[[], Awaitable[int]] | None = None


def check_with(check: Callable[[], Awaitable[int]]) -> None:
    """What to run every CHECK_SECONDS while some listener is deaf: end the shells of offboarded people."""
    global _check_people
    _check_people = check


# Who listens on which group through which layer: consumers, and shells waiting for their browser.
_members: dict[object, tuple[Any, str, str]] = {}
# Those of them that cannot hear notices right now, and why.
_deaf: dict[object, str] = {}
# Those that have let go (left their group, or were forgotten): a reader task of theirs still unwinding
# (its layer call failing as the consumer closes) must not count them as deaf again, which would keep the
# database checks running for a terminal that is gone.
_gone: weakref.WeakSet[object] = weakref.WeakSet()
_rejoin_all = False
_checks: asyncio.Task[None] | None = None
_background: set[asyncio.Task[None]] = set()


async def join(layer: Any, group: str, channel: str, listener: object) -> bool:
    """Put `channel` in `group`; if the layer fails, note the listener as deaf instead of raising."""
    _members[listener] = (layer, group, channel)
    with contextlib.suppress(TypeError):  # not weakly referable: never in _gone
        _gone.discard(listener)
    if layer is None:
        cannot_hear(listener, "no channel layer is configured")
        return False
    try:
        await _group_add(layer, group, channel)
    except Exception as exc:
        cannot_hear(listener, _problem(exc))
        return False
    can_hear(listener)
    return True


async def next_message(layer: Any, channel: str, listener: object) -> dict[str, Any]:
    """The next message on `channel`; while the layer fails, wait for it to come back instead of raising.

    Coming back includes joining the listener's group again: a restarted Redis has forgotten who was in it.
    """
    delay = RETRY_FIRST
    while True:
        if layer is not None and (listener not in _deaf or await _join_again(listener)):
            try:
                # No timeout here: channels-redis waits in a blocking pop and answers when a message comes.
                return await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                cannot_hear(listener, _problem(exc))
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)


async def _join_again(listener: object) -> bool:
    membership = _members.get(listener)
    if membership is None:
        return True  # no group joined yet (the consumer is still connecting): just try to receive
    layer, group, channel = membership
    return await join(layer, group, channel, listener)


async def leave(layer: Any, group: str, channel: str, listener: object) -> None:
    """Take `channel` out of `group` if the layer answers; either way stop counting the listener."""
    forget(listener)
    if layer is None or not channel:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(LAYER_TIMEOUT):
            await layer.group_discard(group, channel)


def forget(listener: object) -> None:
    with contextlib.suppress(TypeError):  # an object without weak references is simply not remembered
        _gone.add(listener)
    _members.pop(listener, None)
    if _deaf.pop(listener, None) is not None and not _deaf:
        _stop_checks()


def registered() -> set[object]:
    """Every listener this process has joined to a group, or counts as deaf, and not yet let go (for tests
    and shutdown)."""
    return set(_members) | set(_deaf)


def deaf_listeners() -> int:
    """How many listeners of this worker cannot hear offboarding notices now (for tests and logs)."""
    return len(_deaf)


def cannot_hear(listener: object, problem: str) -> None:
    global _checks, _rejoin_all
    if listener in _gone:
        return
    if not _deaf:
        log.warning(
            "the channel layer cannot be reached (%s): offboarding notices do not arrive, so live terminals "
            "here are checked against the database every %g s until it is back",
            problem,
            CHECK_SECONDS,
        )
    _deaf[listener] = problem
    _rejoin_all = True
    loop = asyncio.get_running_loop()
    if _checks is None or _checks.done() or _checks.get_loop() is not loop:
        _checks = loop.create_task(_check_people_while_deaf(), name="terminal-offboarding-checks")


def can_hear(listener: object) -> None:
    global _rejoin_all
    if _deaf.pop(listener, None) is None:
        return
    if not _deaf:
        log.info("the channel layer answers again: offboarding notices reach live terminals at once")
        _stop_checks()
    if _rejoin_all:
        # Listeners that waited in the same receive as this one may never have seen the layer fail,
        # yet a restarted Redis forgot their groups as well: put every one of them back, once per outage.
        _rejoin_all = False
        task = asyncio.get_running_loop().create_task(_rejoin_the_rest(), name="terminal-offboarding-rejoin")
        _background.add(task)
        task.add_done_callback(_background.discard)


async def _rejoin_the_rest() -> None:
    for listener, (layer, group, channel) in list(_members.items()):
        if listener in _deaf or _members.get(listener) is None or layer is None:
            continue  # a deaf listener joins again by itself before it listens
        try:
            await _group_add(layer, group, channel)
        except Exception as exc:
            cannot_hear(listener, _problem(exc))


async def _group_add(layer: Any, group: str, channel: str) -> None:
    async with asyncio.timeout(LAYER_TIMEOUT):
        try:
            await layer.group_add(group, channel)
        except Exception:
            # After a Redis restart each pooled connection fails once before it is replaced: try a fresh one.
            await layer.group_add(group, channel)


def _stop_checks() -> None:
    if _checks is not None and not _checks.done():
        _checks.cancel()


async def _check_people_while_deaf() -> None:
    # At once first: a notice may have been lost in the very moment the layer went away.
    while _deaf:
        try:
            if _check_people is not None:
                await _check_people()
        except Exception:
            log.exception("checking whether the people of live terminals are still active failed")
        await asyncio.sleep(CHECK_SECONDS)


def _problem(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {LAYER_TIMEOUT:g} s"
    return f"{type(exc).__name__}: {exc}"
