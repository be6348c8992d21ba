"""Typing into a shell and timing its echo: through the console's terminal socket, or straight into a PTY.

Both sides are driven the same way: one printable key, then wait until it comes back. Every
KEYS_PER_LINE keys the line is wiped with Ctrl-U (not timed) and the output let settle, so the
line never wraps and a timed echo never carries a redraw.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import shutil
import struct
import termios
import time
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect

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


class ConsoleTerminal(Shell):
    """The page's side of /ws/clusters/{slug}/terminal/: the same headers and frames a browser sends."""

    def __init__(self, base_url: str, slug: str, cookie: str) -> None:
        self.origin = base_url
        self.url = (
            base_url.replace("http://", "ws://")
            + f"/ws/clusters/{slug}/terminal/?"
            + urlencode({"cols": COLS, "rows": ROWS})
        )
        self.cookie = cookie
        self.ws: ClientConnection | None = None
        self.controls: list[dict[str, Any]] = []
        self.seen = bytearray()

    async def open(self, timeout: float = 60.0) -> dict[str, Any]:
        """Connect, wait for the shell ("connected") and its first prompt."""
        self.ws = await connect(
            self.url,
            additional_headers={"Cookie": f"sessionid={self.cookie}", "Origin": self.origin},
            compression=None,
            max_size=None,
            open_timeout=timeout,
            ping_interval=None,
        )
        deadline = time.monotonic() + timeout
        while True:
            message = await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic()))
            if isinstance(message, str):
                control = json.loads(message)
                self.controls.append(control)
                if control.get("type") == "closed":
                    raise RuntimeError(f"the console refused the terminal: {control.get('reason')}")
                if control.get("type") == "status" and control.get("state") == "connected":
                    break
        await self.settle(0.3, timeout)
        return self.controls[-1]

    async def _send(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    async def _until(self, needle: bytes, timeout: float) -> None:
        assert self.ws is not None
        got = bytearray()
        async with asyncio.timeout(timeout):
            while needle not in got:
                message = await self.ws.recv()
                if isinstance(message, bytes):
                    got += message
                else:
                    self._control(message)

    def _control(self, message: str) -> None:
        control = json.loads(message)
        self.controls.append(control)
        if control.get("type") == "closed":
            raise RuntimeError(f"the console closed the terminal: {control.get('reason')}")

    async def settle(self, quiet: float = QUIET, timeout: float = 10.0) -> None:
        assert self.ws is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = await asyncio.wait_for(self.ws.recv(), quiet)
            except TimeoutError:
                return
            if isinstance(message, bytes):
                self.seen += message
            else:
                self._control(message)

    async def close(self) -> None:
        """Close as the page's close button does, so the shell ends now rather than after the resume grace."""
        ws = self.ws
        if ws is None:
            return
        self.ws = None
        try:
            await ws.send(json.dumps({"type": "close"}))
            async with asyncio.timeout(10):
                while True:
                    message = await ws.recv()
                    if isinstance(message, str) and json.loads(message).get("type") == "closed":
                        break
        except Exception:  # noqa: S110 - the socket may already be gone; closing it below is all that is left
            pass
        await ws.close()


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
