"""The shell keeper: a process apart from the web workers that holds every terminal's shell.

A shell held by a web worker ends with it (a deploy, a crash), and a reconnect that the load balancer
sends to another worker cannot reach it. With CLUSTERRA_SHELL_KEEPER set, the workers open and reattach
shells here instead (terminal.keeper_link, through terminal.shells), and all a shell does by itself runs
here, unchanged (terminal.live.LiveTerminal): the idle and maximum-length clocks, the recording, the
output kept for an absent page, listening for offboarding while no page watches. So all of it goes on
across reattaches and across the restart of any worker. The decisions stay in the worker (who may open
a terminal, provisioning); the keeper does what a connection asks.

Who may ask is settled by the file system alone: whoever can connect can open a shell as anyone. The
socket lives in a directory only the keeper's own user can enter (0700, its own: the keeper refuses to
start in any other), never where nginx or a person's shell can reach. Offboarding reaches a shell whose
page is away through the channel layer, so the keeper needs REDIS_URL like the workers.

Protocol: one connection per attached page, in frames of
  kind (1 byte) + length (4 bytes, big-endian) + payload,
kind D for terminal bytes (keystrokes in, output out; at most MAX_DATA, senders cut at CHUNK) and kind J for
one JSON object with an "op" (at most MAX_CONTROL).
  worker → keeper, the first frame, one of
    {"op": "open", "person": <pk>, "cluster": <slug>, "posix_user", "cwd", "cols", "rows",
     "client": [address, port] or null}
    {"op": "resume", "token", "person": <pk>, "cluster": <slug>}
  keeper → worker, the answer, one of
    {"op": "opened", "session": <row pk>, "token", "posix_user", "cluster_name", "recorded",
     "idle_minutes", "resumed"}, then the output the page missed as D frames, then {"op": "caught_up"}
    {"op": "failed", "message"}: the sentence for the person (the session row says it too); then EOF
    {"op": "unknown"}: this person has no shell on this cluster with that token (any more); then EOF
  While it waits for "opened" the worker may send {"op": "end", "reason", "message"}: the opening is
  abandoned, and the row ends as failed with that message.
  Then both ways, until the end:
    worker → keeper: D keystrokes; {"op": "resize", "cols", "rows"};
      {"op": "end", "reason": "closed" | "offboarded" | "withdrawn", "message"}: end the shell now
    keeper → worker: D output; {"op": "control", "message": {...}} (a warning for the page);
      {"op": "end", "message": {"type": "closed", "code", "reason"[, "exit_status"]}}, the last frame.
  A connection that ends without an "end" is a page that went away: the shell waits for the resume window.
  A frame that breaks these rules closes its own connection, never another one nor the keeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from audit.log import record
from clusters.models import Cluster
from terminal import live as live_terminals
from terminal.live import LiveTerminal
from terminal.models import TerminalSession
from terminal.opening import open_terminal
from terminal.transports.base import TransportError

log = logging.getLogger(__name__)
Ended = TerminalSession.Ended

DATA, CONTROL = b"D", b"J"
_HEADER = struct.Struct(">cI")
# Bounds on one frame's payload: a length beyond them is an error, never an allocation.
MAX_DATA = 256 * 1024
MAX_CONTROL = 64 * 1024
# The most terminal bytes a sender puts in one D frame.
CHUNK = 64 * 1024
# A peer that takes no bytes for this long is dropped, so it cannot stall a shell's output for good.
SEND_TIMEOUT = 10.0
# How long a new connection may take to say what it wants.
HELLO_TIMEOUT = 10.0
# Only the directory's owner may enter it.
DIRECTORY_MODE = 0o700
# The ends a worker may ask for; every other end is the keeper's own to find (idle, exited, ...).
WORKER_ENDS = frozenset({Ended.CLOSED, Ended.OFFBOARDED, Ended.WITHDRAWN})
MAX_MESSAGE = 2000
MAX_SIZE = 10_000
STOPPED = (
    "The console's shell keeper was stopped (a restart or an upgrade of the server), and this shell with it; "
    "open a new terminal."
)
GONE_WHILE_OPENING = "The web worker went away before the terminal had opened."


class KeeperError(Exception):
    """The keeper cannot start; the message says why and what to do."""


class ProtocolError(Exception):
    """A frame that breaks the protocol: its connection is closed."""


# ---- frames (both sides) ------------------------------------------------------------------------


def data_frames(data: bytes) -> bytes:
    """`data` as D frames of at most CHUNK bytes each."""
    view = memoryview(data)
    return b"".join(
        _HEADER.pack(DATA, len(view[i : i + CHUNK])) + view[i : i + CHUNK] for i in range(0, len(view), CHUNK)
    )


def control_frame(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()
    if len(payload) > MAX_CONTROL:
        raise ValueError(f"a control frame of {len(payload)} bytes is over the limit of {MAX_CONTROL}")
    return _HEADER.pack(CONTROL, len(payload)) + payload


class Wire:
    """One keeper connection, seen from either end: frames in, frames out, bounded both ways."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def receive(self) -> tuple[bytes, Any] | None:
        """(DATA, bytes) or (CONTROL, dict with a str "op"); None when the peer ended between frames."""
        try:
            header = await self.reader.readexactly(_HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise ProtocolError("the connection ended inside a frame header") from None
        kind, length = _HEADER.unpack(header)
        limit = {DATA: MAX_DATA, CONTROL: MAX_CONTROL}.get(kind)
        if limit is None:
            raise ProtocolError(f"unknown frame kind {kind!r}")
        if length > limit:
            raise ProtocolError(f"a {kind.decode()} frame of {length} bytes is over the limit of {limit}")
        try:
            payload = await self.reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise ProtocolError("the connection ended inside a frame") from None
        if kind == DATA:
            return DATA, payload
        try:
            message = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            raise ProtocolError("a control frame that is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise ProtocolError("a control frame without an op")
        return CONTROL, message

    async def send(self, frames: bytes) -> None:
        """Write whole frames (one write, so frames of concurrent senders never interleave)."""
        if self.writer.is_closing():
            raise ConnectionResetError("the keeper connection is closed")
        self.writer.write(frames)
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self.writer.drain()
        except TimeoutError:
            self.writer.transport.abort()
            raise ConnectionResetError(f"the other side took nothing for {SEND_TIMEOUT:g} s") from None

    async def send_control(self, message: dict[str, Any]) -> None:
        await self.send(control_frame(message))

    def close(self) -> None:
        # What is already written still goes out before the socket closes.
        self.writer.close()

    @property
    def closed(self) -> bool:
        return self.writer.is_closing()


# ---- the keeper ---------------------------------------------------------------------------------


class Link(Wire):
    """A worker's connection for one page, as the Viewer a LiveTerminal shows itself in."""

    async def show_output(self, data: bytes) -> None:
        await self.send(data_frames(data))

    async def show_control(self, message: dict[str, Any]) -> None:
        await self.send_control({"op": "control", "message": message})

    async def show_end(self, message: dict[str, Any]) -> None:
        try:
            await self.send_control({"op": "end", "message": message})
        finally:
            self.close()

    async def show_lost(self) -> None:
        self.close()


def prepare_socket(path: Path) -> None:
    """Make the socket's directory (0700) or check it is private; clear a socket no keeper listens on.

    Raises KeeperError with the sentence an operator needs.
    """
    if not path.is_absolute():
        raise KeeperError(f"The shell keeper's socket must be an absolute path, not {str(path)!r}.")
    directory = path.parent
    try:
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIRECTORY_MODE)
        found = directory.lstat()
    except OSError as exc:
        raise KeeperError(f"The shell keeper cannot use the directory {directory}: {exc.strerror}.") from exc
    if not stat.S_ISDIR(found.st_mode):
        raise KeeperError(
            f"{directory} is not a directory (a symbolic link?); the keeper's socket needs one."
        )
    if found.st_uid != os.geteuid():
        raise KeeperError(
            f"{directory} belongs to uid {found.st_uid}, not to the keeper's user (uid {os.geteuid()}). "
            "A connection to the keeper opens shells as anyone, so only its own user may reach the socket."
        )
    if found.st_mode & 0o077:
        raise KeeperError(
            f"{directory} is open to others (mode {stat.S_IMODE(found.st_mode):o}). A connection to the "
            "keeper opens shells as anyone, so its socket must be in a directory of mode 700: "
            f"chmod 700 {directory}"
        )
    try:
        existing = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(existing.st_mode):
        raise KeeperError(f"{path} exists and is not a socket; remove it or choose another path.")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # left by a keeper that stopped
    else:
        raise KeeperError(f"Another shell keeper is listening on {path}.")
    finally:
        probe.close()


class Keeper:
    """The server: a connection per attached page, every shell in terminal.live's registry of this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, announce: Any = None) -> None:
        prepare_socket(self.path)
        ended = await database_sync_to_async(end_orphans)()
        if ended:
            log.warning("shell keeper: %d terminal(s) left open by a keeper that stopped were ended", ended)
        server = await asyncio.start_unix_server(self._accept, path=str(self.path))
        # The directory already keeps others out; the socket itself says the same.
        os.chmod(self.path, 0o600)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        if announce is not None:
            announce(f"shell keeper listening on {self.path} (pid {os.getpid()})")
        try:
            await self._stop.wait()
        finally:
            server.close()
            # The shells end with a sentence for each attached page and a row that says why.
            running = live_terminals.running()
            await asyncio.gather(*(t.end(Ended.ERROR, STOPPED) for t in running), return_exceptions=True)
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            with contextlib.suppress(OSError):
                self.path.unlink()
            if announce is not None:
                announce(f"shell keeper stopped; {len(running)} shell(s) ended")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        link = Link(reader, writer)
        try:
            await self._serve(link)
        except ProtocolError as exc:
            log.warning("shell keeper: a connection broke the protocol and was closed: %s", exc)
        except (ConnectionError, TimeoutError) as exc:
            log.info("shell keeper: a connection ended: %s", exc)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("shell keeper: a connection failed")
        finally:
            link.close()
            self._connections.discard(task)

    async def _serve(self, link: Link) -> None:
        async with asyncio.timeout(HELLO_TIMEOUT):
            first = await link.receive()
        if first is None:
            return
        kind, hello = first
        if kind != CONTROL or hello["op"] not in ("open", "resume"):
            raise ProtocolError("the first frame is neither open nor resume")
        pending_read: asyncio.Task[tuple[bytes, Any] | None] | None = None
        if hello["op"] == "resume":
            terminal = live_terminals.find(
                _text(hello, "token", 100), _number(hello, "person"), _text(hello, "cluster", 50)
            )
            if terminal is None:
                await link.send_control({"op": "unknown"})
                return
            resumed = True
        else:
            opened = await self._open(link, hello)
            if opened is None:
                return
            terminal, pending_read = opened
            resumed = False
        # Attached and caught up in one go, with no await between: no output slips in ahead of the backlog.
        missed = terminal.attach(link)
        link.writer.write(
            control_frame(
                {
                    "op": "opened",
                    "session": terminal.session_id,
                    "token": terminal.token,
                    "posix_user": terminal.posix_user,
                    "cluster_name": terminal.cluster_name,
                    "recorded": terminal.recorded,
                    "idle_minutes": terminal.idle_minutes,
                    "resumed": resumed,
                }
            )
            + b"".join(data_frames(chunk) for chunk in missed)
            + control_frame({"op": "caught_up"})
        )
        await self._relay(link, terminal, pending_read)

    async def _open(
        self, link: Link, hello: dict[str, Any]
    ) -> tuple[LiveTerminal, asyncio.Task[tuple[bytes, Any] | None]] | None:
        """Start the shell the worker asked for, or say why not; an "end" meanwhile abandons it."""
        person_id = _number(hello, "person")
        slug = _text(hello, "cluster", 50)
        request = {
            "posix_user": _text(hello, "posix_user", 32),
            "cwd": _text(hello, "cwd", 4096),
            "cols": _number(hello, "cols", low=1, high=MAX_SIZE),
            "rows": _number(hello, "rows", low=1, high=MAX_SIZE),
        }
        client = hello.get("client")
        if client is not None and not (
            isinstance(client, list) and len(client) == 2 and isinstance(client[0], str)
        ):
            raise ProtocolError("client is not [address, port]")
        person, cluster = await database_sync_to_async(_person_and_cluster)(person_id, slug)
        if person is None or cluster is None:
            what = "person" if person is None else "cluster"
            await link.send_control(
                {"op": "failed", "message": f"The console has no active {what} for this terminal any more."}
            )
            return None
        opening = asyncio.get_running_loop().create_task(
            open_terminal(person=person, cluster=cluster, scope={"client": client}, **request)
        )
        reading = asyncio.get_running_loop().create_task(link.receive())
        try:
            await asyncio.wait({opening, reading}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            opening.cancel(STOPPED)
            reading.cancel()
            await asyncio.wait({opening, reading})
            raise
        if not opening.done():
            why = _abandoned_because(reading)
            # open_terminal writes the sentence on the row it had begun, as the worker's own cancel would.
            opening.cancel(why)
            await asyncio.wait({opening})
            if not opening.cancelled() and opening.exception() is None:
                # It opened in the very moment it was abandoned.
                await opening.result().end(Ended.CLOSED, why)
            return None
        try:
            terminal = opening.result()
        except TransportError as exc:
            reading.cancel()
            await link.send_control({"op": "failed", "message": str(exc)})
            return None
        except BaseException:
            reading.cancel()
            raise
        return terminal, reading

    async def _relay(
        self,
        link: Link,
        terminal: LiveTerminal,
        pending_read: asyncio.Task[tuple[bytes, Any] | None] | None,
    ) -> None:
        """Keystrokes, sizes and the worker's end to the shell; without an end, the page is away."""
        try:
            while True:
                if pending_read is not None:
                    frame, pending_read = await pending_read, None
                else:
                    frame = await link.receive()
                if frame is None:
                    return
                kind, payload = frame
                if kind == DATA:
                    await terminal.keystrokes(payload)
                    continue
                op = payload["op"]
                if op == "resize":
                    cols = _number(payload, "cols", low=1, high=MAX_SIZE)
                    rows = _number(payload, "rows", low=1, high=MAX_SIZE)
                    await terminal.resize(cols, rows)
                elif op == "end":
                    reason, message = _worker_end(payload)
                    await terminal.end(reason, message)
                    return
                else:
                    raise ProtocolError(f"unexpected op {op!r}")
        finally:
            if pending_read is not None:
                pending_read.cancel()
            # Does nothing when the shell ended or another page took it over meanwhile.
            terminal.detach(link)


def _abandoned_because(reading: asyncio.Task[tuple[bytes, Any] | None]) -> str:
    try:
        frame = reading.result()
    except (ProtocolError, ConnectionError):
        return GONE_WHILE_OPENING
    if frame is None:
        return GONE_WHILE_OPENING
    kind, payload = frame
    if kind == CONTROL and payload["op"] == "end":
        try:
            return _worker_end(payload)[1]
        except ProtocolError:
            pass
    return GONE_WHILE_OPENING


def _worker_end(payload: dict[str, Any]) -> tuple[str, str]:
    reason = payload.get("reason")
    if reason not in WORKER_ENDS:
        raise ProtocolError(f"a worker cannot end a shell as {reason!r}")
    return str(reason), _text(payload, "message", MAX_MESSAGE)


def _text(message: dict[str, Any], name: str, longest: int) -> str:
    value = message.get(name)
    if not isinstance(value, str) or len(value) > longest:
        raise ProtocolError(f"{name} is not a text of at most {longest} characters")
    return value


def _number(message: dict[str, Any], name: str, *, low: int = 1, high: int = 2**63 - 1) -> int:
    value = message.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(f"{name} is not a whole number in {low}..{high}")
    return value


def _person_and_cluster(person_id: int, slug: str) -> tuple[Any, Cluster | None]:
    person = get_user_model().objects.filter(pk=person_id, is_active=True).first()
    return person, Cluster.objects.filter(slug=slug).first()


def end_orphans() -> int:
    """End the rows of shells a keeper on this host held when it died (their shell process is gone).

    A keeper killed outright writes no end; its shells hang up with it. Rows of live shells (a web worker's
    own, on a console run without the keeper) are left alone.
    """
    prefix = f"pty-{os.uname().nodename}-"
    ended = 0
    for row in TerminalSession.objects.filter(
        ended__isnull=True, transport=Cluster.Transport.LOCAL, transport_session_id__startswith=prefix
    ).select_related("person"):
        try:
            pid = int(row.transport_session_id[len(prefix) :])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, someone else's
        else:
            continue  # alive
        message = "The console's shell keeper stopped without closing this terminal; its shell ended with it."
        row.ended = timezone.now()
        row.end_reason = Ended.ERROR
        row.end_message = message
        row.save(update_fields=["ended", "end_reason", "end_message"])
        record(
            "terminal.closed",
            actor=row.person or row.person_name,
            cluster=row.cluster_slug,
            target=row.posix_user,
            outcome="error",
            reason=Ended.ERROR,
            message=message,
            details={"session": row.pk, "transport_session_id": row.transport_session_id},
        )
        ended += 1
    return ended


def needs_a_shared_layer() -> None:
    """Refuse a channel layer of this process's own: no worker's offboarding notice would ever reach it."""
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    if not backend or backend.endswith("InMemoryChannelLayer"):
        raise KeeperError(
            "The shell keeper needs REDIS_URL, as the web workers do: offboarding and withdrawn grants reach "
            "a shell whose page is away through Redis, and a memory channel layer is this process's own."
        )


async def serve(path: Path, *, announce: Any = None) -> None:
    """Run a keeper on `path` until SIGTERM or SIGINT; KeeperError if it cannot start."""
    needs_a_shared_layer()
    await Keeper(path).run(announce=announce)
