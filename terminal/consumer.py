"""The terminal's WebSocket: who may open a shell, then keystrokes in and output out as binary frames.

Control messages are small JSON text frames. From the page: {"type": "resize", "cols", "rows"}
and {"type": "close"}. To the page: {"type": "status", "state": ...}, {"type": "warning",
"kind": "idle"|"max_length", "seconds": n or null (withdrawn)} and, last,
{"type": "closed", "code", "reason"} (and "exit_status" when the shell itself ended, null when the
transport cannot tell) before the socket closes with CLOSED_CODE. When the shell keeper (terminal.keeper)
breaks off, the socket closes with LOST_CODE and no "closed": the page reconnects as after a dropped network.

Query string: cols, rows (the size to start with), cwd (a directory to start in) and resume
(the token of a shell to get back after a dropped connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from access import refusals
from access.policy import decide
from accounts import provisioning
from accounts.offboarding import CLOSE_MESSAGE_TYPE, WITHDRAWN_MESSAGE_TYPE, person_group
from clusters.models import Cluster
from clusters.refusal import Refusal
from terminal import notices, shells
from terminal.live import offboarded_message, withdrawn_message
from terminal.models import TerminalSession
from terminal.opening import off_loop
from terminal.shells import Shell
from terminal.transports.base import TransportError, check_cwd

log = logging.getLogger(__name__)
# The channel-layer messages a terminal acts on; every other type is dropped unread.
LAYER_MESSAGES = frozenset({CLOSE_MESSAGE_TYPE, WITHDRAWN_MESSAGE_TYPE})
Ended = TerminalSession.Ended

# Close codes (4000-4999 are the application's): refused before accept, or ended after a "closed" message.
REFUSED_SIGNED_OUT = 4401
REFUSED_ORIGIN = 4403
CLOSED_CODE = 4000
# Closed without a "closed" message: the shell keeper broke off, so the page reconnects (and resumes).
LOST_CODE = 4503
# Keystrokes typed while the shell is still being set up are kept, up to this much.
EARLY_INPUT_LIMIT = 64 * 1024
# Bounds on a terminal size; anything outside is a bug or an attack, not a screen.
MIN_SIZE, MAX_COLS, MAX_ROWS = 2, 1000, 500


def same_origin(scope: dict[str, Any]) -> bool:
    """The page that opened the socket is this console itself (or an origin the operator trusts).

    AllowedHostsOriginValidator only checks the Origin's host name against ALLOWED_HOSTS; this also
    wants its port and (behind TLS) its scheme to match, like Django's CSRF origin check.
    """
    headers = {name.lower(): value for name, value in scope.get("headers", [])}
    origin = headers.get(b"origin", b"").decode("latin-1").strip()
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    if not origin or origin == "null":
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not host:
        return False
    if settings.SECURE and parts.scheme != "https":
        return False
    return parts.netloc.lower() == host


def _size(raw: Any, default: int, largest: int) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return default
    return max(MIN_SIZE, min(largest, value))


class TerminalConsumer(AsyncWebsocketConsumer):
    """One browser tab's terminal on one cluster."""

    live: Shell | None = None
    group: str | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' AsyncConsumer.__call__, except that a failing channel layer does not end the socket.

        Channels awaits the layer's receive() beside the browser's frames, and an exception from it
        (Redis down) would end this consumer and cut a working shell off its page. Here the layer is
        heard through live.next_message, which waits for it to come back while the database stands in.
        """
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            sources.append(self._next_layer_message)
        try:
            await self._serve(sources)
        except StopConsumer:
            pass
        finally:
            notices.forget(self)

    async def _serve(self, sources: list[Any]) -> None:
        """Channels' await_many_dispatch, without a new task and an asyncio.wait for every message.

        That is what it spends on each frame, so on each keystroke: in a worker of 2,000 typing terminals
        a measurable share of its CPU. Here each source is read by one task for the consumer's whole life;
        the handlers still run one at a time, as Channels runs them, and the first error or StopConsumer
        from any of them ends them all.
        """
        turn = asyncio.Lock()

        async def read(source: Any) -> None:
            while True:
                message = await source()
                async with turn:
                    await self.dispatch(message)

        readers = [asyncio.ensure_future(read(source)) for source in sources]
        try:
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            for reader in done:
                reader.result()
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _next_layer_message(self) -> dict[str, Any]:
        # Only the console's own notices come this way. The layer is shared (Redis, perhaps reachable from
        # a shell), and Channels dispatches by the message's type: a "websocket.receive" written into
        # someone's person group would otherwise be typed into their shell, as them.
        while True:
            message = await notices.next_message(self.channel_layer, self.channel_name, self)
            if isinstance(message, dict) and message.get("type") in LAYER_MESSAGES:
                return message
            log.warning("terminal: a channel-layer message that is not a console notice was dropped")

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=REFUSED_SIGNED_OUT)
            return
        if not same_origin(self.scope):
            await self.close(code=REFUSED_ORIGIN)
            return
        self.person = user
        self.slug = self.scope["url_route"]["kwargs"]["slug"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.params = {name: values[-1] for name, values in query.items()}
        self.cols = _size(self.params.get("cols"), 80, MAX_COLS)
        self.rows = _size(self.params.get("rows"), 24, MAX_ROWS)
        self.early_input = bytearray()
        self.closing_by_request = False
        self.finished = False
        await self.accept()
        self.group = person_group(user.pk)
        # Without the layer (Redis down) the terminal still opens: this worker then asks the database
        # every few seconds whether the person is still active, so offboarding still closes it.
        await notices.join(self.channel_layer, self.group, self.channel_name, self)
        # Set up in a task: provisioning can take seconds, and meanwhile this consumer must still hear
        # the browser leave and the offboarding message.
        self.setup = asyncio.get_running_loop().create_task(self._open())

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch closes stale database connections before every handler, a round trip through
        # the thread pool that doubled a keystroke's echo time. A binary frame is keystrokes: receive()
        # hands them to the transport (a PTY write or a data-channel message) or to the early-input
        # buffer, and never reaches the ORM, so it skips that hop. Text frames can end the terminal and
        # write its row, so they, like every other message, keep Channels' own dispatch.
        if message["type"] == "websocket.receive" and message.get("text") is None:
            await self.websocket_receive(message)
            return
        await super().dispatch(message)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await notices.leave(self.channel_layer, self.group, self.channel_name, self)
        await self._stop_setup("The browser went away before the terminal had opened.")
        live = self.live
        if live is None:
            return
        if self.closing_by_request:
            await live.end(Ended.CLOSED, "You closed the terminal.")
        else:
            live.detach(self)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if bytes_data is not None:
            if self.live is not None:
                await self.live.keystrokes(bytes_data)
            elif len(self.early_input) + len(bytes_data) <= EARLY_INPUT_LIMIT:
                self.early_input += bytes_data
            return
        try:
            message = json.loads(text_data or "")
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "resize":
            self.cols = _size(message.get("cols"), self.cols, MAX_COLS)
            self.rows = _size(message.get("rows"), self.rows, MAX_ROWS)
            if self.live is not None:
                await self.live.resize(self.cols, self.rows)
        elif kind == "close":
            self.closing_by_request = True
            if self.live is not None:
                await self.live.end(Ended.CLOSED, "You closed the terminal.")
            else:
                await self._finish("closed", "You closed the terminal.")

    async def offboard_close(self, event: dict[str, Any]) -> None:
        """The person was offboarded: end the shell now, whatever it is doing."""
        message = offboarded_message(event)
        await self._stop_setup(message)
        if self.live is not None:
            await self.live.end(Ended.OFFBOARDED, message)
        else:
            await self._finish(Ended.OFFBOARDED, message)

    async def access_withdrawn(self, event: dict[str, Any]) -> None:
        """The terminal grant on some cluster was withdrawn: the shell there ends (one on another stays).

        A shell whose browser has gone hears the same message itself (terminal.live).
        """
        if event.get("cluster") not in (None, self.slug):  # None: every cluster (a logout at the IdP)
            return
        message = withdrawn_message(event)
        await self._stop_setup(message)
        if self.live is not None:
            await self.live.end(Ended.WITHDRAWN, message)
        else:
            await self._finish(Ended.WITHDRAWN, message)

    # ---- Viewer: how a LiveTerminal reaches this browser ----------------------------------------

    async def show_output(self, data: bytes) -> None:
        # Straight to the server, as AsyncWebsocketConsumer.send(bytes_data=...) would after two more calls.
        await self.base_send({"type": "websocket.send", "bytes": data})

    async def show_control(self, message: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(message))

    async def show_end(self, message: dict[str, Any]) -> None:
        self.live = None
        extra = {"exit_status": message["exit_status"]} if "exit_status" in message else {}
        await self._finish(message["code"], message["reason"], **extra)

    async def show_lost(self) -> None:
        # Not "closed": the shell may well run on in the keeper, and the page's reconnect finds it (or, if
        # the keeper is gone, hears why no terminal can open).
        self.live = None
        if self.finished:
            return
        self.finished = True
        with contextlib.suppress(Exception):
            await self.close(code=LOST_CODE)

    # ---- opening --------------------------------------------------------------------------------

    async def _stop_setup(self, why: str) -> None:
        setup = getattr(self, "setup", None)
        if setup is not None and not setup.done():
            # The message reaches open_terminal, which writes it on the session row it had begun.
            setup.cancel(why)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await setup

    async def _open(self) -> None:
        try:
            await self._status("connecting", "Checking your access…")
            cluster = await self._cluster()
            decision = await database_sync_to_async(decide)(self.person, "terminal.open", cluster)
            if not decision.allowed:
                await database_sync_to_async(refusals.record)(
                    self.person, cluster, decision, request=_audit_scope(self.scope)
                )
                raise Refusal(decision.message, code=decision.code)
            try:
                cwd = check_cwd(self.params.get("cwd"))
            except ValueError as exc:
                raise Refusal(f"The terminal cannot start there: {exc}.", code="bad_cwd") from None
            token = self.params.get("resume", "")
            try:
                resumed = (
                    await shells.resume(
                        token, person=self.person, cluster=cluster, scope=_audit_scope(self.scope)
                    )
                    if token
                    else None
                )
            except TransportError as exc:
                raise Refusal(str(exc), code="transport") from None
            if resumed is not None:
                await self._show(resumed, cluster, resumed_shell=True)
                return
            await self._status("provisioning", f"Getting your account on {cluster.name} ready…")
            # A ProvisioningError is a Refusal: the terminal closes with its code and sentence.
            account = await off_loop(provisioning.ready_account)(self.person, cluster)
            posix_user = account.username
            await self._status("starting", f"Starting a shell as {posix_user} on {cluster.name}…")
            try:
                started = await shells.open(
                    person=self.person,
                    cluster=cluster,
                    posix_user=posix_user,
                    cwd=cwd,
                    cols=self.cols,
                    rows=self.rows,
                    scope=_audit_scope(self.scope),
                )
            except TransportError as exc:
                raise Refusal(str(exc), code="transport") from None
            await self._show(started, cluster, resumed_shell=False, lost_previous=bool(token))
        except Refusal as refusal:
            await self._finish(refusal.code, refusal.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("terminal on %s for %s: opening failed", self.slug, self.person.get_username())
            await self._finish(
                Ended.ERROR,
                "The terminal could not be opened because of an internal error; try again, and tell an "
                "administrator if it keeps happening.",
            )

    async def _cluster(self) -> Cluster:
        cluster = await database_sync_to_async(Cluster.objects.filter(slug=self.slug).first)()
        if cluster is None:
            raise Refusal(f"There is no cluster called {self.slug!r} in the console.", code="no_cluster")
        return cluster

    async def _show(
        self, terminal: Shell, cluster: Cluster, *, resumed_shell: bool, lost_previous: bool = False
    ) -> None:
        if self.finished:
            # The browser left or the person was offboarded while the shell was starting.
            await terminal.end(Ended.CLOSED, "The browser closed the terminal before it had opened.")
            return
        missed = terminal.attach(self)
        self.live = terminal
        if resumed_shell:
            message = f"Reconnected to your shell as {terminal.posix_user} on {cluster.name}."
        elif lost_previous:
            message = (
                f"Connected as {terminal.posix_user} on {cluster.name}. The previous shell could not be "
                "resumed, so this is a new one."
            )
        else:
            message = f"Connected as {terminal.posix_user} on {cluster.name}."
        await self.send(
            text_data=json.dumps(
                {
                    "type": "status",
                    "state": "connected",
                    "message": message,
                    "user": terminal.posix_user,
                    "cluster": cluster.name,
                    "session": terminal.session_id,
                    "resume": terminal.token,
                    "resumed": resumed_shell,
                    "recorded": terminal.recorded,
                    "idle_minutes": terminal.idle_minutes,
                }
            )
        )
        for chunk in missed:
            await self.send(bytes_data=chunk)
        if resumed_shell:
            await terminal.resize(self.cols, self.rows)
        if self.early_input:
            early, self.early_input = bytes(self.early_input), bytearray()
            await terminal.keystrokes(early)

    async def _status(self, state: str, message: str) -> None:
        await self.send(text_data=json.dumps({"type": "status", "state": state, "message": message}))

    async def _finish(self, code: str, reason: str, **extra: Any) -> None:
        """Say why, then close: the page shows the sentence and does not reconnect on its own."""
        if self.finished:
            return
        self.finished = True
        with contextlib.suppress(Exception):
            await self.send(text_data=json.dumps({"type": "closed", "code": code, "reason": reason, **extra}))
            await self.close(code=CLOSED_CODE)


def _audit_scope(scope: dict[str, Any]) -> dict[str, Any]:
    # The audit needs the client address only; the full scope would pin the user and session in memory.
    return {"client": scope.get("client")}
