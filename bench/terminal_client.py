"""Typing into a shell and timing its echo: through the console's terminal socket, or straight into a PTY.

Both sides are driven the same way: one printable key, then wait until it comes back. Every
KEYS_PER_LINE keys the line is wiped with Ctrl-U (not timed) and the output let settle, so the
line never wraps and a timed echo never carries a redraw.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import pty
import shutil
import struct
import termios
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

KEY = b"x"
KILL_LINE = b"\x15"
KEYS_PER_LINE = 30
# The shell answers a key within a millisecond; this much silence means it has said everything.
QUIET = 0.05
COLS, ROWS = 100, 30


class Shell:
    """What the benchmarks need of a shell: type a key and time its echo; wipe the line; close."""

    typed = 0

    async def open(self, timeout: float = 60.0) -> Any:
        raise NotImplementedError

    async def _send(self, data: bytes) -> None:
        raise NotImplementedError

    async def _until(self, needle: bytes, timeout: float) -> None:
        raise NotImplementedError

    async def settle(self, quiet: float = QUIET, timeout: float = 10.0) -> None:
        raise NotImplementedError

    async def echo(self, timeout: float = 10.0) -> float:
        """Seconds from writing one key to seeing it come back."""
        if self.typed and self.typed % KEYS_PER_LINE == 0:
            await self._send(KILL_LINE)
            await self.settle()
        started = time.perf_counter()
        await self._send(KEY)
        await self._until(KEY, timeout)
        elapsed = time.perf_counter() - started
        self.typed += 1
        return elapsed

    async def close(self) -> None:
        raise NotImplementedError


class PageSocket(asyncio.Protocol):
    """A WebSocket client (RFC 6455) as small as the page's needs: frames in, masked frames out.

    The bench stands in for 2,000 browsers in one process, on the same two cores as the console:
    a general-purpose client (a task, a queue and an assembler per message) spent as much CPU per
    echo as the console did and became the bottleneck it was measuring. This one parses frames in
    data_received and wakes the waiting typist directly. It still speaks the whole protocol the
    console's server expects: the upgrade with its key check, masking, fragments, ping and close.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head = bytearray()
        self._data = bytearray()
        self._fragments = bytearray()
        self._fragment_text = False
        self.on_binary: Any = None
        self.on_text: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("the console closed the connection"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.handshake.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head.clear()
            self.handshake.set_result(head)
            data = rest
            if not data:
                return
        self._data += data
        self._frames()

    def _frames(self) -> None:
        buffer = self._data
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            length = second & 0x7F
            at = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length = int.from_bytes(buffer[2:4], "big")
                at = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length = int.from_bytes(buffer[2:10], "big")
                at = 10
            if second & 0x80:
                raise ConnectionError("a server must not mask its frames")
            if len(buffer) < at + length:
                return
            payload = bytes(buffer[at : at + length])
            del buffer[: at + length]
            self._frame(first & 0x80 != 0, first & 0x0F, payload)

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == 0x8:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(_frame(0x8, payload[:2]))
                self.transport.close()
            return
        if opcode == 0x9:
            self.send(0xA, payload)
            return
        if opcode == 0xA:
            return
        if opcode in (0x1, 0x2):
            self._fragment_text = opcode == 0x1
            if fin:
                self._deliver(self._fragment_text, payload)
            else:
                self._fragments[:] = payload
            return
        if opcode == 0x0:
            self._fragments += payload
            if fin:
                whole = bytes(self._fragments)
                self._fragments.clear()
                self._deliver(self._fragment_text, whole)

    def _deliver(self, text: bool, payload: bytes) -> None:
        if text:
            self.on_text(payload.decode())
        else:
            self.on_binary(payload)

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("the terminal socket is closed")
        self.transport.write(_frame(opcode, payload))


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame: a client masks every frame with a fresh key (RFC 6455 §5.3)."""
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    mask = os.urandom(4)
    if length:
        key = (mask * (length // 4 + 1))[:length]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    return head + mask + payload


class ConsoleTerminal(Shell):
    """The page's side of /ws/clusters/{slug}/terminal/: the same headers and frames a browser sends."""

    def __init__(self, base_url: str, slug: str, cookie: str) -> None:
        parts = urlsplit(base_url)
        self.origin = base_url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = f"/ws/clusters/{slug}/terminal/?" + urlencode({"cols": COLS, "rows": ROWS})
        self.cookie = cookie
        self.socket: PageSocket | None = None
        self.controls: list[dict[str, Any]] = []
        self.seen = bytearray()
        # Output is matched against `needle` as it arrives; `waiter` is woken when it is seen.
        self.buffer = bytearray()
        self.needle = b""
        self.waiter: asyncio.Future[None] | None = None
        self.ended: str | None = None
        self.lost = False

    async def open(self, timeout: float = 60.0) -> dict[str, Any]:
        """Connect, wait for the shell ("connected") and its first prompt."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, socket = await loop.create_connection(PageSocket, self.host, self.port)
            self.socket = socket
            socket.on_binary, socket.on_text, socket.on_lost = self._binary, self._text, self._lost
            key = base64.b64encode(os.urandom(16)).decode()
            assert socket.transport is not None
            socket.transport.write(
                (
                    f"GET {self.path} HTTP/1.1\r\n"
                    f"Host: {self.host}:{self.port}\r\n"
                    "Upgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n"
                    f"Cookie: sessionid={self.cookie}\r\n"
                    f"Origin: {self.origin}\r\n\r\n"
                ).encode()
            )
            status, *lines = (await socket.handshake).decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)
            }
            # SHA-1 because RFC 6455 names it for this check (against confused servers, not attackers).
            accept = hashlib.sha1((key + _WEBSOCKET_GUID).encode(), usedforsecurity=False).digest()
            if status.split()[1:2] != ["101"] or headers.get("sec-websocket-accept") != base64.b64encode(
                accept
            ).decode("ascii"):
                raise RuntimeError(f"the console refused the WebSocket upgrade: {status}")
            while not any(c.get("type") == "status" and c.get("state") == "connected" for c in self.controls):
                self._raise_if_ended()
                await self._wait(b"", None)
        await self.settle(0.3, timeout)
        return self.controls[-1]

    def _binary(self, payload: bytes) -> None:
        self.buffer += payload
        self._wake()

    def _text(self, message: str) -> None:
        control = json.loads(message)
        self.controls.append(control)
        if control.get("type") == "closed":
            self.ended = str(control.get("reason"))
        self._wake()

    def _lost(self) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if (
            waiter is not None
            and not waiter.done()
            and (self.ended is not None or self.lost or not self.needle or self.needle in self.buffer)
        ):
            waiter.set_result(None)

    def _raise_if_ended(self) -> None:
        if self.ended is not None:
            raise RuntimeError(f"the console closed the terminal: {self.ended}")
        if self.lost:
            raise ConnectionError("the terminal socket closed")

    async def _wait(self, needle: bytes, timeout: float | None) -> None:
        """Until `needle` is in the output (any frame, if empty), the terminal ends, or `timeout`."""
        self.needle = needle
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        if self.ended is not None or self.lost or (needle and needle in self.buffer):
            waiter.set_result(None)
        async with asyncio.timeout(timeout):
            await waiter

    async def _send(self, data: bytes) -> None:
        if self.socket is None:
            raise ConnectionError("the terminal socket is closed")
        self.socket.send(0x2, data)

    async def _until(self, needle: bytes, timeout: float) -> None:
        await self._wait(needle, timeout)
        self._raise_if_ended()

    async def echo(self, timeout: float = 10.0) -> float:
        # Armed before the key goes out, so no echo is missed; the socket wakes this typist itself.
        if self.typed and self.typed % KEYS_PER_LINE == 0:
            await self._send(KILL_LINE)
            await self.settle()
        self.buffer.clear()
        started = time.perf_counter()
        await self._send(KEY)
        await self._until(KEY, timeout)
        elapsed = time.perf_counter() - started
        self.typed += 1
        return elapsed

    async def settle(self, quiet: float = QUIET, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.seen += self.buffer
            self.buffer.clear()
            self._raise_if_ended()
            try:
                await self._wait(b"", quiet)
            except TimeoutError:
                return

    async def close(self) -> None:
        """Close as the page's close button does, so the shell ends now rather than after the resume grace."""
        socket = self.socket
        if socket is None:
            return
        try:
            socket.send(0x1, json.dumps({"type": "close"}).encode())
            async with asyncio.timeout(10):
                while self.ended is None and not self.lost:
                    await self._wait(b"", None)
        except Exception:  # noqa: S110 - the socket may already be gone; closing it below is all that is left
            pass
        self.socket = None
        if socket.transport is not None and not socket.transport.is_closing():
            with contextlib.suppress(ConnectionError):
                socket.send(0x8, (1000).to_bytes(2, "big"))
            socket.transport.close()


_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class TransportShell(Shell):
    """One of the console's terminal transports driven directly, without WebSocket, daphne or consumer.

    Set beside the same transport behind the console, it splits the console's added time into
    what the transport costs and what the socket and consumer cost.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.chunks: Any = None
        self.pending: asyncio.Task[bytes] | None = None

    async def open(self, timeout: float = 60.0) -> None:
        await self.transport.start(COLS, ROWS)
        self.chunks = aiter(self.transport.output())
        await self.settle(0.3, timeout)

    async def _next(self) -> bytes:
        # A read cut short by a timeout is kept and awaited next time, so no output is lost.
        if self.pending is None:
            self.pending = asyncio.ensure_future(anext(self.chunks))
        chunk = await asyncio.shield(self.pending)
        self.pending = None
        return chunk

    async def _send(self, data: bytes) -> None:
        await self.transport.send(data)

    async def _until(self, needle: bytes, timeout: float) -> None:
        got = bytearray()
        async with asyncio.timeout(timeout):
            while needle not in got:
                got += await self._next()

    async def settle(self, quiet: float = QUIET, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self._next(), quiet)
            except TimeoutError:
                return

    async def close(self) -> None:
        await self.transport.close("The benchmark is over.")
        if self.pending is not None:
            self.pending.cancel()


def login_shell_argv(user: str) -> list[str]:
    """The login shell as the local transport starts it: setsid takes the PTY, runuser becomes the user."""
    setsid = shutil.which("setsid") or "/usr/bin/setsid"
    runuser = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "/usr/sbin/runuser"
    return [setsid, "--ctty", runuser, "-u", user, "--", "/bin/bash", "-l"]


class PtyShell(Shell):
    """The floor: the same login shell on a PTY this process reads and writes itself, no console between."""

    def __init__(self, user: str, home: str) -> None:
        self.user = user
        self.home = home
        self.master: int | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.needle = b""

    async def open(self, timeout: float = 30.0) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
            "HOME": self.home,
            "SHELL": "/bin/bash",
            "USER": self.user,
            "LOGNAME": self.user,
        }
        try:
            self.process = await asyncio.create_subprocess_exec(
                *login_shell_argv(self.user), stdin=slave, stdout=slave, stderr=slave, env=env, cwd=self.home
            )
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        asyncio.get_running_loop().add_reader(master, self._readable)
        await self.settle(0.3, timeout)

    def _readable(self) -> None:
        assert self.master is not None
        try:
            data = os.read(self.master, 65536)
        except (BlockingIOError, OSError):
            return
        self.buffer += data
        waiter = self.waiter
        if waiter is not None and not waiter.done() and (not self.needle or self.needle in self.buffer):
            waiter.set_result(None)

    async def _send(self, data: bytes) -> None:
        assert self.master is not None
        os.write(self.master, data)

    async def _until(self, needle: bytes, timeout: float) -> None:
        self.buffer.clear()
        self.needle = needle
        self.waiter = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(timeout):
            await self.waiter

    async def echo(self, timeout: float = 10.0) -> float:
        # The buffer is cleared and the waiter armed before the key is written, so no echo is missed.
        if self.typed and self.typed % KEYS_PER_LINE == 0:
            await self._send(KILL_LINE)
            await self.settle()
        self.buffer.clear()
        self.needle = KEY
        self.waiter = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await self._send(KEY)
        async with asyncio.timeout(timeout):
            await self.waiter
        elapsed = time.perf_counter() - started
        self.typed += 1
        return elapsed

    async def settle(self, quiet: float = QUIET, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.needle = b""
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.waiter, quiet)
            except TimeoutError:
                return
            self.buffer.clear()

    async def close(self) -> None:
        if self.master is not None:
            asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
            self.master = None
        process = self.process
        if process is not None and process.returncode is None:
            # Closing the master hangs the terminal up; the login shell takes its SIGHUP and leaves.
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
