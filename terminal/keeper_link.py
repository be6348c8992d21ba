"""A web worker's side of the shell keeper (terminal.keeper): a shell held there, used like a LiveTerminal.

One UNIX-socket connection per attached page, in the frames terminal.keeper describes. The keeper runs
the shell's clocks, recording and backlog; this side relays the page to it and tells the page what the
keeper says. A connection that breaks while a page watches (the keeper restarted, or dropped this worker)
is told to the page as lost, not ended: the page reconnects and gets its shell back if it is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from terminal.keeper import CONTROL, DATA, MAX_MESSAGE, ProtocolError, Wire, control_frame, data_frames
from terminal.live import BACKLOG_BYTES, Viewer
from terminal.transports.base import TransportError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
# Opening may provision a cgroup, start an SSM session, begin a recording: seconds, rarely more.
OPEN_TIMEOUT = 60.0
RESUME_TIMEOUT = 10.0
# How long an end asked for may take (the shell's hang-up, the last output, the recording's upload).
END_TIMEOUT = 30.0

UNREACHABLE = (
    "The console's shell keeper cannot be reached, so no terminal can be opened right now. Try again in a "
    "minute, and tell an administrator if it keeps happening."
)
NO_ANSWER = (
    "The console's shell keeper did not answer in time, so the terminal could not be opened. Try again, "
    "and tell an administrator if it keeps happening."
)
BROKEN = (
    "The console's shell keeper broke off while the terminal was opening. Try again, and tell an "
    "administrator if it keeps happening."
)


class KeeperUnreachable(TransportError):
    """Nothing answers on the keeper's socket (not running, or not this worker's to reach)."""


async def open_shell(
    path: str,
    *,
    person_id: int,
    cluster_slug: str,
    posix_user: str,
    cwd: str,
    cols: int,
    rows: int,
    client: Any,
) -> KeptShell:
    """Have the keeper start a shell; TransportError with the sentence for the person if it cannot."""
    wire = await _connect(path)
    try:
        await wire.send_control(
            {
                "op": "open",
                "person": person_id,
                "cluster": cluster_slug,
                "posix_user": posix_user,
                "cwd": cwd,
                "cols": cols,
                "rows": rows,
                "client": list(client) if client else None,
            }
        )
        shell = await _answer(wire, OPEN_TIMEOUT)
    except asyncio.CancelledError as exc:
        # The page left (or its person was offboarded) while the shell was starting: the keeper gives the
        # opening up, and the row says why, as an opening in this process would.
        _abandon(wire, str(exc.args[0]) if exc.args else "The terminal was not opened after all.")
        raise
    except TimeoutError:
        _abandon(wire, NO_ANSWER)
        raise TransportError(NO_ANSWER) from None
    except BaseException:
        wire.close()
        raise
    if shell is None:
        wire.close()
        raise TransportError(BROKEN)
    return shell


async def resume_shell(path: str, *, token: str, person_id: int, cluster_slug: str) -> KeptShell | None:
    """The person's shell with this token on this cluster, attached to this worker; None if there is none."""
    wire = await _connect(path)
    try:
        await wire.send_control(
            {"op": "resume", "token": token, "person": person_id, "cluster": cluster_slug}
        )
        shell = await _answer(wire, RESUME_TIMEOUT)
    except TimeoutError:
        wire.close()
        raise TransportError(NO_ANSWER) from None
    except BaseException:
        wire.close()
        raise
    if shell is None:
        wire.close()
    return shell


async def _connect(path: str) -> Wire:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(path)
    except (OSError, TimeoutError) as exc:
        log.error("the shell keeper at %s cannot be reached: %s", path, exc)
        raise KeeperUnreachable(UNREACHABLE) from exc
    return Wire(reader, writer)


async def _answer(wire: Wire, timeout: float) -> KeptShell | None:
    """The keeper's answer: the shell and the output it missed, or None ("unknown").

    TransportError when the keeper said "failed" or broke off.
    """
    try:
        async with asyncio.timeout(timeout):
            frame = await wire.receive()
            if frame is None:
                raise TransportError(BROKEN)
            kind, answer = frame
            if kind != CONTROL:
                raise ProtocolError("output before the answer")
            if answer["op"] == "failed":
                raise TransportError(str(answer.get("message") or BROKEN))
            if answer["op"] == "unknown":
                return None
            if answer["op"] != "opened":
                raise ProtocolError(f"unexpected answer {answer['op']!r}")
            missed: list[bytes] = []
            while (frame := await wire.receive()) is not None:
                kind, payload = frame
                if kind == DATA:
                    missed.append(payload)
                elif payload["op"] == "caught_up":
                    return KeptShell(wire, answer, missed)
                else:
                    raise ProtocolError(f"unexpected {payload['op']!r} before caught_up")
            raise TransportError(BROKEN)
    except (ProtocolError, ConnectionError, KeyError, TypeError, ValueError) as exc:
        log.error("the shell keeper answered out of turn: %s", exc)
        raise TransportError(BROKEN) from exc


def _abandon(wire: Wire, why: str) -> None:
    # Written without waiting (the caller is being cancelled); closing still sends what was written.
    with contextlib.suppress(Exception):
        wire.writer.write(_end_frame("closed", why))
    wire.close()


def _end_frame(reason: str, message: str) -> bytes:
    return control_frame({"op": "end", "reason": reason, "message": message[:MAX_MESSAGE]})


class KeptShell:
    """A shell the keeper holds, used as a LiveTerminal is: attach, keystrokes, resize, end, detach."""

    def __init__(self, wire: Wire, opened: dict[str, Any], missed: list[bytes]) -> None:
        self._wire = wire
        self.session_id = int(opened["session"])
        self.token = str(opened["token"])
        self.posix_user = str(opened["posix_user"])
        self.cluster_name = str(opened["cluster_name"])
        self.recorded = bool(opened["recorded"])
        self.idle_minutes = int(opened["idle_minutes"])
        self.resumed = bool(opened["resumed"])
        self.viewer: Viewer | None = None
        # Output from before the page is shown: the missed backlog, then whatever comes until attach.
        self._early: deque[bytes] = deque(missed)
        self._early_bytes = sum(map(len, missed))
        self._attached_once = False
        self._ending = False
        # Set once the keeper said "end" (`_end_message`) or the connection broke.
        self._over = asyncio.Event()
        self._end_message: dict[str, Any] | None = None
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"kept-shell-{self.session_id}"
        )

    def attach(self, viewer: Viewer) -> list[bytes]:
        """Show the shell in `viewer` from now on; returns the output it has not shown yet."""
        self.viewer = viewer
        self._attached_once = True
        missed, self._early = list(self._early), deque()
        self._early_bytes = 0
        if self._over.is_set() and self._end_message is None:
            # Lost before it was even shown: the page reconnects.
            asyncio.get_running_loop().create_task(self._lost(viewer))
        return missed

    def detach(self, viewer: Viewer) -> None:
        """The page went away without closing: the keeper keeps the shell for the resume window."""
        if self.viewer is not viewer or self._over.is_set():
            return
        self.viewer = None
        self._wire.close()

    async def keystrokes(self, data: bytes) -> None:
        if self._over.is_set() or self._ending or not data:
            return
        with contextlib.suppress(ConnectionError):
            await self._wire.send(data_frames(data))

    async def resize(self, cols: int, rows: int) -> None:
        if self._over.is_set() or self._ending:
            return
        with contextlib.suppress(ConnectionError):
            await self._wire.send_control({"op": "resize", "cols": cols, "rows": rows})

    async def end(self, reason: str, message: str) -> None:
        """Have the keeper end the shell; returns once the page was told (by the keeper, or here)."""
        if self._ending:
            await self._over.wait()
            return
        self._ending = True
        if not self._over.is_set():
            try:
                await self._wire.send(_end_frame(reason, message))
                async with asyncio.timeout(END_TIMEOUT):
                    await self._over.wait()
            except (ConnectionError, TimeoutError):
                self._wire.close()
        if self._end_message is None:
            # The keeper never confirmed (it went away): the page still hears how its terminal ended.
            self._over.set()
            viewer, self.viewer = self.viewer, None
            if viewer is not None:
                with contextlib.suppress(Exception):
                    await viewer.show_end({"type": "closed", "code": reason, "reason": message})

    async def _read(self) -> None:
        try:
            while (frame := await self._wire.receive()) is not None:
                kind, payload = frame
                if kind == DATA:
                    await self._output(payload)
                elif payload["op"] == "control":
                    viewer = self.viewer
                    if viewer is not None and isinstance(payload.get("message"), dict):
                        with contextlib.suppress(Exception):
                            await viewer.show_control(payload["message"])
                elif payload["op"] == "end":
                    message = payload.get("message")
                    if not isinstance(message, dict):
                        raise ProtocolError("an end without its message")
                    self._end_message = message
                    viewer, self.viewer = self.viewer, None
                    if viewer is not None:
                        with contextlib.suppress(Exception):
                            await viewer.show_end(message)
                    return
                else:
                    raise ProtocolError(f"unexpected op {payload['op']!r}")
        except (ProtocolError, ConnectionError, KeyError, TypeError) as exc:
            log.warning("terminal %s: the shell keeper's connection broke: %s", self.session_id, exc)
        finally:
            self._wire.close()
            self._over.set()
        viewer = self.viewer
        if self._end_message is None and not self._ending and viewer is not None:
            await self._lost(viewer)

    async def _output(self, data: bytes) -> None:
        viewer = self.viewer
        if viewer is not None:
            try:
                await viewer.show_output(data)
            except Exception:
                log.debug("terminal %s: output to a closing socket dropped", self.session_id)
        elif not self._attached_once:
            self._early.append(data)
            self._early_bytes += len(data)
            while self._early_bytes > BACKLOG_BYTES and len(self._early) > 1:
                self._early_bytes -= len(self._early.popleft())

    async def _lost(self, viewer: Viewer) -> None:
        self.viewer = None
        with contextlib.suppress(Exception):
            await viewer.show_lost()
