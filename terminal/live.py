"""A running terminal apart from the WebSocket that shows it: shell, counters, idle clock, recording, its end.

The shell outlives a dropped browser connection for the cluster's resume window
(TerminalPolicy.resume_minutes, else CLUSTERRA_TERMINAL_RESUME_SECONDS), so the page can reconnect to the
same shell. It lives in the memory of the process that opened it: the web worker itself
(CLUSTERRA_SHELL_KEEPER empty, one process), or the shell keeper (terminal.keeper), which every worker
reaches, so a reconnect through any worker finds it.
terminal.opening starts one; terminal.shells is how the consumer gets one, wherever it lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections import deque
from typing import Any, Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from access.policy import decide
from accounts.offboarding import CLOSE_MESSAGE_TYPE, WITHDRAWN_MESSAGE_TYPE, person_group
from audit.log import record
from clusters.models import Cluster
from terminal import heap, notices
from terminal.models import TerminalSession
from terminal.recording import Recorder
from terminal.transports.base import Transport

log = logging.getLogger(__name__)
Ended = TerminalSession.Ended

# Seconds in a minute. Idle and maximum lengths are configured in minutes; tests shrink the minute.
MINUTE = 60.0
# Output kept for a browser that is away, replayed when it comes back (older output is dropped).
BACKLOG_BYTES = 256 * 1024
# How long an ending waits for the last output to be read before giving up on it.
DRAIN_TIMEOUT = 2.0

_live: dict[str, LiveTerminal] = {}


class Viewer(Protocol):
    """The browser side of a terminal (the consumer): where output, notices and the end are shown."""

    async def show_output(self, data: bytes) -> None: ...

    async def show_control(self, message: dict[str, Any]) -> None: ...

    async def show_end(self, message: dict[str, Any]) -> None: ...

    async def show_lost(self) -> None:
        """The shell's keeper cannot be reached any more (terminal.keeper_link): the page should reconnect."""


def find(token: str, person_id: int, cluster_slug: str) -> LiveTerminal | None:
    """A shell of this person on this cluster that can still be reattached, by its resume token."""
    live = _live.get(token)
    if live is None or live.person_id != person_id or live.cluster_slug != cluster_slug or live.ending:
        return None
    return live


def running() -> list[LiveTerminal]:
    """Every shell this worker holds (for tests and shutdown)."""
    return list(_live.values())


def _minutes(n: int) -> str:
    return f"{n} minute" if n == 1 else f"{n} minutes"


class LiveTerminal:
    """One open shell: the transport, what it counted, its limits, and the one way it ends (`end`)."""

    def __init__(
        self,
        *,
        transport: Transport,
        row: TerminalSession,
        cluster: Cluster,
        posix_user: str,
        idle_minutes: int,
        max_minutes: int,
        recorder: Recorder | None,
        scope: dict[str, Any] | None,
        resume_minutes: int | None = None,
    ) -> None:
        self.transport = transport
        self.row = row
        self.person_id = row.person_id
        self.cluster_slug = cluster.slug
        self.cluster_name = cluster.name
        self.posix_user = posix_user
        self.idle_minutes = idle_minutes
        self.max_minutes = max_minutes
        # None: the console's CLUSTERRA_TERMINAL_RESUME_SECONDS, read when the browser goes.
        self.resume_minutes = resume_minutes
        self.recorder = recorder
        self.scope = scope
        # Handed to the page once; a reconnect presents it to get this shell back.
        self.token = secrets.token_urlsafe(24)
        self.bytes_in = 0
        self.bytes_out = 0
        self.viewer: Viewer | None = None
        self.ending = False
        self.end_reason: str | None = None
        self.end_message: str | None = None

        loop = asyncio.get_running_loop()
        self._loop = loop
        self.started_at = loop.time()
        self.last_keystroke = self.started_at
        self.idle_warned = False
        self.max_warned = False
        self._backlog: deque[bytes] = deque()
        self._backlog_bytes = 0
        self._pump_task: asyncio.Task[None] | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self._end_task: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._listener: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    # ---- lifetime -------------------------------------------------------------------------------

    def begin(self) -> None:
        _live[self.token] = self
        heap.terminal_opened(len(_live))
        self._pump_task = self._loop.create_task(self._pump(), name=f"terminal-{self.row.pk}-pump")
        self._clock_task = self._loop.create_task(self._watch_clock(), name=f"terminal-{self.row.pk}-clock")

    @property
    def idle_seconds(self) -> float:
        return self.idle_minutes * MINUTE

    @property
    def max_seconds(self) -> float:
        return self.max_minutes * MINUTE

    @property
    def session_id(self) -> int:
        """The TerminalSession row's id (what the page is told as "session")."""
        return self.row.pk

    @property
    def recorded(self) -> bool:
        return self.recorder is not None

    def attach(self, viewer: Viewer) -> list[bytes]:
        """Show this terminal in `viewer` from now on; returns the output it missed while away."""
        self.viewer = viewer
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None
            # Now, not when the cancelled task next runs (it may never, if the loop is ending).
            notices.forget(self)
        missed = list(self._backlog)
        self._backlog.clear()
        self._backlog_bytes = 0
        return missed

    def detach(self, viewer: Viewer) -> None:
        """The browser went away without closing: keep the shell for a while in case it comes back."""
        if self.viewer is not viewer or self.ending:
            return
        self.viewer = None
        if self.resume_minutes:
            wait = self.resume_minutes * MINUTE
            within = _minutes(self.resume_minutes)
        else:
            wait = settings.CLUSTERRA_TERMINAL_RESUME_SECONDS
            within = f"{wait} seconds"
        self._grace = self._loop.call_later(
            wait,
            self.end_soon,
            Ended.DISCONNECTED,
            f"The browser disconnected and did not come back within {within}.",
        )
        # Nobody listens for offboarding on this shell's behalf any more, so it listens itself.
        self._listener = self._loop.create_task(self._listen_for_offboarding())

    def end_soon(self, reason: str, message: str) -> None:
        """End in a task of its own: for callers that `end` would cancel (the clock, the pump)."""
        if self._end_task is None and not self.ending:
            self._end_task = self._loop.create_task(self.end(reason, message))

    async def end(self, reason: str, message: str) -> None:
        """Close the shell, finish the recording, write the row and the audit, then tell the browser."""
        if self.ending:
            await self._done.wait()
            return
        self.ending = True
        self.end_reason, self.end_message = reason, message
        _live.pop(self.token, None)
        heap.terminal_ended(len(_live))
        if self._grace is not None:
            self._grace.cancel()
        if self._listener is not None:
            self._listener.cancel()
            notices.forget(self)
        try:
            clock = self._clock_task
            if clock is not None and not clock.done():
                clock.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await clock
            await self.transport.close(message)
            pump = self._pump_task
            if pump is not None and not pump.done():
                # The transport is closed, so its output ends; take what was still on its way.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pump, DRAIN_TIMEOUT)
            location = ""
            if self.recorder is not None:
                location = await asyncio.to_thread(self.recorder.finish)
            await database_sync_to_async(self._write_end)(reason, message, location)
        except Exception:
            log.exception("terminal %s: ending it failed", self.row.pk)
        finally:
            self._done.set()
        viewer, self.viewer = self.viewer, None
        if viewer is not None:
            end = {"type": "closed", "code": reason, "reason": message}
            if reason == Ended.SHELL_EXITED:
                # The page shows a shell that exited with 0 as the normal end it is, not as an error.
                end["exit_status"] = getattr(self.transport, "exit_status", None)
            with contextlib.suppress(Exception):
                await viewer.show_end(end)

    # ---- from the browser -----------------------------------------------------------------------

    async def keystrokes(self, data: bytes) -> None:
        if self.ending or not data:
            return
        self.bytes_in += len(data)
        self.last_keystroke = self._loop.time()
        if self.idle_warned:
            self.idle_warned = False
            await self._notify({"type": "warning", "kind": "idle", "seconds": None})
        await self.transport.send(data)

    async def resize(self, cols: int, rows: int) -> None:
        if self.ending:
            return
        await self.transport.resize(cols, rows)
        if self.recorder is not None:
            self.recorder.resize(cols, rows)

    # ---- tasks ----------------------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            async for chunk in self.transport.output():
                self.bytes_out += len(chunk)
                viewer = self.viewer
                if viewer is not None:
                    try:
                        await viewer.show_output(chunk)
                    except Exception:
                        log.debug("terminal %s: output to a closing socket dropped", self.row.pk)
                else:
                    self._keep(chunk)
                if self.recorder is not None:
                    self.recorder.output(chunk)
        except Exception:
            log.exception("terminal %s: reading the shell's output failed", self.row.pk)
            self.end_soon(Ended.ERROR, "The terminal connection failed unexpectedly; open a new one.")
            return
        gone = None if self.ending else await database_sync_to_async(self._offboarded_because)()
        if gone is not None:
            # Offboarding ends every process of theirs on the head node, this shell too, often before its
            # close notice arrives here: the shell ended because they were offboarded, and the row says so.
            self.end_soon(Ended.OFFBOARDED, offboarded_message({"reason": gone}))
            return
        self.end_soon(Ended.SHELL_EXITED, self.transport.ended_reason or "The shell ended.")

    def _notice_missed(self) -> tuple[str, str] | None:
        """(why, sentence) if the person was offboarded or lost the terminal here; None if they may go on."""
        gone = self._offboarded_because()
        if gone is not None:
            return Ended.OFFBOARDED, offboarded_message({"reason": gone})
        person = get_user_model().objects.filter(pk=self.person_id).first()
        cluster = Cluster.objects.filter(slug=self.cluster_slug).first()
        if person is None or cluster is None:
            return None
        decision = decide(person, "terminal.open", cluster)
        if decision.allowed:
            return None
        return Ended.WITHDRAWN, withdrawn_message({"reason": decision.message})

    def _offboarded_because(self) -> str | None:
        """The reason the person was deactivated with, or None while they are active."""
        found = (
            get_user_model()
            .objects.filter(pk=self.person_id)
            .values("is_active", "deactivated_reason")
            .first()
        )
        if found is None or found["is_active"]:
            return None
        return found["deactivated_reason"] or ""

    async def _watch_clock(self) -> None:
        """Warn a minute before the idle cut and before the maximum length, then cut."""
        while not self.ending:
            now = self._loop.time()
            idle_cut = self.last_keystroke + self.idle_seconds
            max_cut = self.started_at + self.max_seconds
            if now >= max_cut:
                self.end_soon(
                    Ended.MAX_LENGTH,
                    f"Closed after {_minutes(self.max_minutes)}, the longest a terminal may stay open on "
                    f"{self.cluster_name}; open a new one to go on.",
                )
                return
            if now >= idle_cut:
                self.end_soon(
                    Ended.IDLE,
                    f"Closed after {_minutes(self.idle_minutes)} without a keystroke "
                    f"(the idle limit on {self.cluster_name}).",
                )
                return
            wake = [idle_cut, max_cut]
            idle_warn_at = idle_cut - _lead(self.idle_seconds)
            if not self.idle_warned:
                if now >= idle_warn_at:
                    self.idle_warned = True
                    await self._notify(
                        {"type": "warning", "kind": "idle", "seconds": math.ceil(idle_cut - now)}
                    )
                else:
                    wake.append(idle_warn_at)
            max_warn_at = max_cut - _lead(self.max_seconds)
            if not self.max_warned:
                if now >= max_warn_at:
                    self.max_warned = True
                    await self._notify(
                        {"type": "warning", "kind": "max_length", "seconds": math.ceil(max_cut - now)}
                    )
                else:
                    wake.append(max_warn_at)
            # A keystroke moves the idle cut later; waking early just finds that out and sleeps again.
            await asyncio.sleep(max(0.0, min(wake) - self._loop.time()))

    async def _listen_for_offboarding(self) -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel() if layer is not None else ""
        group = person_group(self.person_id)
        await notices.join(layer, group, channel, self)
        try:
            # A notice sent after the page left its group and before this shell joined it reached no one
            # (with the shell keeper that gap spans two processes): the database says whether one was due.
            missed = await database_sync_to_async(self._notice_missed)()
            if missed is not None:
                self.end_soon(*missed)
                return
            while True:
                message = await notices.next_message(layer, channel, self)
                if message.get("type") == CLOSE_MESSAGE_TYPE:
                    self.end_soon(Ended.OFFBOARDED, offboarded_message(message))
                    return
                if message.get("type") == WITHDRAWN_MESSAGE_TYPE and message.get("cluster") in (
                    None,
                    self.cluster_slug,
                ):
                    self.end_soon(Ended.WITHDRAWN, withdrawn_message(message))
                    return
        finally:
            await notices.leave(layer, group, channel, self)

    # ---- helpers --------------------------------------------------------------------------------

    def _keep(self, chunk: bytes) -> None:
        self._backlog.append(chunk)
        self._backlog_bytes += len(chunk)
        while self._backlog_bytes > BACKLOG_BYTES and len(self._backlog) > 1:
            self._backlog_bytes -= len(self._backlog.popleft())

    async def _notify(self, message: dict[str, Any]) -> None:
        viewer = self.viewer
        if viewer is not None:
            with contextlib.suppress(Exception):
                await viewer.show_control(message)

    def _write_end(self, reason: str, message: str, location: str) -> None:
        row = self.row
        row.ended = timezone.now()
        row.end_reason = reason
        row.end_message = message
        row.bytes_in = self.bytes_in
        row.bytes_out = self.bytes_out
        if location:
            row.recording = location
        row.save(update_fields=["ended", "end_reason", "end_message", "bytes_in", "bytes_out", "recording"])
        record(
            "terminal.closed",
            actor=row.person,
            cluster=self.cluster_slug,
            target=self.posix_user,
            outcome="allowed" if reason != Ended.ERROR else "error",
            reason=reason,
            message=message,
            request=self.scope,
            details={
                "session": row.pk,
                "transport_session_id": row.transport_session_id,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "seconds": round((row.ended - row.started).total_seconds(), 1),
            },
        )


def _lead(limit_seconds: float) -> float:
    # A minute's notice, or half the limit when the limit itself is that short.
    return min(MINUTE, limit_seconds / 2)


def offboarded_message(event: dict[str, Any]) -> str:
    why = str(event.get("reason") or "").strip()
    detail = f" ({why})" if why else ""
    return f"Your access to the console was removed{detail}, so this terminal was closed."


def withdrawn_message(event: dict[str, Any]) -> str:
    why = str(event.get("reason") or "").strip()
    return f"{why} This terminal was closed." if why else "Your terminal access was withdrawn."


# ---- offboarding while the channel layer is away (see terminal.notices) ----------------------------


async def check_people() -> int:
    """End the shells of people who are no longer active (offboarded); returns how many it ended."""
    terminals = [terminal for terminal in _live.values() if not terminal.ending]
    if not terminals:
        return 0
    gone = await database_sync_to_async(_deactivated)({terminal.person_id for terminal in terminals})
    ended = 0
    for terminal in terminals:
        if terminal.person_id in gone:
            terminal.end_soon(Ended.OFFBOARDED, offboarded_message({"reason": gone[terminal.person_id]}))
            ended += 1
    return ended


def _deactivated(person_ids: set[int]) -> dict[int, str]:
    people = get_user_model().objects.filter(pk__in=person_ids, is_active=False)
    return dict(people.values_list("pk", "deactivated_reason"))


notices.check_with(check_people)
