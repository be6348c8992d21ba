"""The shell keeper and web workers as real processes for tests, and a terminal page over a real WebSocket.

`Keeper` runs `manage.py keep_shells --socket PATH`; `Worker` runs uvicorn on a loopback port, as production
runs each web worker. Both see the test's database (a transactional test's committed rows) and Redis
through the environment. `socket_page` is tests.support.terminal_support's Page on a real socket to a Worker.

`Keeper(minute=0.5)` runs the same command through tests/support/keeper_minute.py, with a minute of half a
second, so that a keeper's idle and length limits can be tested in seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import REPO
from tests.support import live_server
from tests.support.redis_support import free_port
from tests.support.sync_procs import database_url
from tests.support.terminal_support import Page

PYTHON = sys.executable
START_SECONDS = 30
STOP_SECONDS = 15


def environment(**extra: str) -> dict[str, str]:
    """The test process's environment with its database, UID range and recordings folder, plus `extra`."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        CLUSTERRA_UID_MIN=str(settings.CLUSTERRA_UID_MIN),
        CLUSTERRA_UID_MAX=str(settings.CLUSTERRA_UID_MAX),
        CLUSTERRA_RECORDINGS_DIR=str(settings.CLUSTERRA_RECORDINGS_DIR),
        CLUSTERRA_TERMINAL_RESUME_SECONDS=str(settings.CLUSTERRA_TERMINAL_RESUME_SECONDS),
        CLUSTERRA_TERMINAL_MAX_MINUTES=str(settings.CLUSTERRA_TERMINAL_MAX_MINUTES),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Keeper:
    """`manage.py keep_shells --socket PATH` in a process of its own."""

    def __init__(self, path: Path, *, minute: float | None = None, **env: str) -> None:
        self.path = path
        self.minute = minute
        self.env = env
        self.process: subprocess.Popen[str] | None = None
        self.log = path.parent.parent / f"keeper-{path.parent.name}.log"

    def start(self) -> Keeper:
        command = ["manage.py", "keep_shells", "--socket", str(self.path)]
        if self.minute is not None:
            command = ["-m", "tests.support.keeper_minute", str(self.minute), *command]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [PYTHON, *command],
                cwd=REPO,
                env=environment(**self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        deadline = time.monotonic() + START_SECONDS
        while not self.accepts():
            if self.process.poll() is not None:
                raise RuntimeError(f"the keeper exited with {self.process.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the keeper did not listen within {START_SECONDS} s: {self.output()}")
            time.sleep(0.05)
        return self

    def accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.path))
            except OSError:
                return False
        return True

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def kill(self) -> None:
        """As the OOM killer would: no chance to end a shell or write a row."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(STOP_SECONDS)

    def stop(self) -> int | None:
        """As systemd stops it: SIGTERM, which ends every shell with a row that says so."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_SECONDS)
        return self.process.returncode if self.process is not None else None


class Worker:
    """A web worker: uvicorn serving the console on a free loopback port, shells in the keeper at `keeper`."""

    def __init__(self, keeper: Path, log_dir: Path) -> None:
        self.keeper = keeper
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"worker-{self.port}.log"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Worker:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                live_server.command(self.port),
                cwd=REPO,
                env=environment(CLUSTERRA_SHELL_KEEPER=str(self.keeper)),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not start: {self.log.read_text()}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(STOP_SECONDS)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()


class SocketCommunicator:
    """What Page uses of Channels' WebsocketCommunicator, over a real WebSocket to a worker."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def receive_output(self, timeout: float) -> dict[str, Any]:
        try:
            message = await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed as exc:
            return {"type": "websocket.close", "code": exc.rcvd.code if exc.rcvd else 1006}
        if isinstance(message, bytes):
            return {"type": "websocket.send", "bytes": message}
        return {"type": "websocket.send", "text": message}

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.ws.send(bytes_data if bytes_data is not None else text_data)

    def drop(self) -> None:
        """The laptop lid closes: the connection goes, with no close frame."""
        self.ws.transport.abort()


@asynccontextmanager
async def socket_page(worker: Worker, slug: str, *, cookie: str, **query: Any):
    """A terminal page connected to `worker`; yields the Page (its communicator is a SocketCommunicator)."""
    host = f"127.0.0.1:{worker.port}"
    path = f"ws://{host}/ws/clusters/{slug}/terminal/"
    if query:
        path += "?" + urlencode(query)
    headers = {"Origin": f"http://{host}", "Cookie": f"sessionid={cookie}"}
    async with connect(path, additional_headers=headers, open_timeout=10, close_timeout=2) as ws:
        yield Page(SocketCommunicator(ws))
