"""Helpers for the terminal tests: a WebSocket client on the real ASGI app that reads like the page does."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client

from access.models import Grant
from accounts import posix
from accounts.models import User
from clusters.models import Cluster
from terminal import live
from tests.conftest import require
from tests.support.fake_headnode import ct_email, free_uid_block, remove_linux_user

HOST = "127.0.0.1:8000"
ORIGIN = f"http://{HOST}"


def local_cluster(slug: str = "here", **fields: Any) -> Cluster:
    """This machine as a cluster whose terminals are local PTYs (no Slurm needed for a shell)."""
    values = {
        "name": "This host",
        "slurmrestd_url": "http://127.0.0.1:9",
        "has_accounting": False,
        "transport": Cluster.Transport.LOCAL,
        # Nothing answers on port 9: offboarding there leaves jobs alone rather than fail to cancel them.
        "offboard_jobs": "leave",
    } | fields
    return Cluster.objects.create(slug=slug, **values)


def ssm_cluster(slug: str = "aws", *, instance_id: str, region: str, **fields: Any) -> Cluster:
    """A cluster whose terminals go through Session Manager to `instance_id` (the agent emulator in tests)."""
    values = {
        "name": "AWS cluster",
        "slurmrestd_url": "http://127.0.0.1:9",
        "has_accounting": False,
        "transport": Cluster.Transport.SSM,
        "ssm_instance_id": instance_id,
        "aws_region": region,
        # Nothing answers on port 9: offboarding there leaves jobs alone rather than fail to cancel them.
        "offboard_jobs": "leave",
    } | fields
    return Cluster.objects.create(slug=slug, **values)


def grant_terminal(person: User, cluster: Cluster) -> Grant:
    return Grant.objects.create(cluster=cluster, user=person, terminal=True)


def new_real_person(settings: Any) -> tuple[User, str]:
    """A person whose POSIX account gets a free UID block; the Linux user appears on first provisioning."""
    require(os.geteuid() == 0, "needs root: the local terminal starts shells as other Linux users")
    require(bool(shutil.which("runuser") and shutil.which("setsid")), "needs runuser and setsid (util-linux)")
    start = free_uid_block()
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = start, start + 19
    email = ct_email()
    person = User.objects.create(username=email, email=email)
    return person, posix.ensure_account(person).username


def forget_real_person(name: str) -> None:
    remove_linux_user(name)


def processes_of(user: str) -> list[str]:
    """The user's processes that still run (zombies left for init to reap do not count)."""
    uid = pwd.getpwnam(user).pw_uid
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = dict(
                line.split(":", 1) for line in Path(f"/proc/{entry.name}/status").read_text().splitlines()
            )
        except (OSError, ValueError):
            continue
        if int(status["Uid"].split()[1]) == uid and not status["State"].strip().startswith("Z"):
            found.append(f"{entry.name} {status['Name'].strip()}")
    return found


async def session_cookie(person: User) -> str:
    client = Client()
    await sync_to_async(client.force_login)(person)
    return client.cookies["sessionid"].value


class Page:
    """What the terminal page sees on its socket: the screen's bytes, control messages, the close code."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.screen = bytearray()
        self.controls: list[dict[str, Any]] = []
        self.received_bytes = 0
        self.close_code: int | None = None
        self._seen_controls = 0
        self._prompted = False

    async def _next(self, deadline: float) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError
        message = await self.communicator.receive_output(timeout=remaining)
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
        elif message.get("bytes") is not None:
            self.screen += message["bytes"]
            self.received_bytes += len(message["bytes"])
        elif message.get("text") is not None:
            self.controls.append(json.loads(message["text"]))

    async def until_screen(self, needle: bytes, timeout: float = 5.0) -> bytes:
        deadline = asyncio.get_running_loop().time() + timeout
        while needle not in self.screen:
            if self.close_code is not None:
                raise AssertionError(f"closed ({self.close_code}) before {needle!r}: {bytes(self.screen)!r}")
            try:
                await self._next(deadline)
            except TimeoutError:
                screen = bytes(self.screen)
                raise AssertionError(
                    f"no {needle!r} within {timeout}s; screen {screen!r}, controls {self.controls}"
                ) from None
        return bytes(self.screen)

    async def until_control(self, message_type: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """The next control message of this type (and these fields) after the ones already returned."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for index in range(self._seen_controls, len(self.controls)):
                message = self.controls[index]
                if message.get("type") == message_type and all(
                    message.get(k) == v for k, v in fields.items()
                ):
                    self._seen_controls = index + 1
                    return message
            if self.close_code is not None:
                raise AssertionError(
                    f"closed ({self.close_code}) before a {message_type} {fields}: {self.controls}"
                )
            try:
                await self._next(deadline)
            except TimeoutError:
                raise AssertionError(
                    f"no {message_type} {fields} within {timeout}s; got {self.controls}"
                ) from None

    async def until_closed(self, timeout: float = 5.0) -> int:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.close_code is None:
            try:
                await self._next(deadline)
            except TimeoutError:
                raise AssertionError(f"not closed within {timeout}s; got {self.controls}") from None
        return self.close_code

    async def type(self, keys: bytes) -> None:
        await self.communicator.send_to(bytes_data=keys)

    async def control(self, message: dict[str, Any]) -> None:
        await self.communicator.send_to(text_data=json.dumps(message))

    async def connected(self, timeout: float = 10.0) -> dict[str, Any]:
        return await self.until_control("status", timeout, state="connected")

    async def prompt(self, timeout: float = 5.0) -> None:
        """Wait until the shell has printed its first prompt (anything ending in '$ ' or '# ')."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not (self.screen.rstrip(b" ").endswith((b"$", b"#")) and self.screen.endswith(b" ")):
            try:
                await self._next(deadline)
            except TimeoutError:
                raise AssertionError(f"no prompt within {timeout}s; got {bytes(self.screen)!r}") from None

    async def run(self, command: str, marker: str, timeout: float = 5.0) -> bytes:
        """Type `command` at a prompt and wait for `marker` on a line of its own in the output."""
        if not self._prompted:
            # Typed ahead of the first prompt, the echo and the prompt would share a line with the answer.
            await self.prompt(timeout)
            self._prompted = True
        await self.type(command.encode() + b"\r")
        return await self.until_line(marker, timeout)

    async def until_line(self, text: str, timeout: float = 5.0) -> bytes:
        """Wait for `text` as a whole line (bash may put a bracketed-paste switch and a CR before it)."""
        line = re.compile(rb"[\r\n]" + re.escape(text.encode()) + rb"\r\n")
        deadline = asyncio.get_running_loop().time() + timeout
        while not line.search(self.screen):
            if self.close_code is not None:
                raise AssertionError(f"closed ({self.close_code}) before {text!r}: {bytes(self.screen)!r}")
            try:
                await self._next(deadline)
            except TimeoutError:
                raise AssertionError(
                    f"no line {text!r} within {timeout}s; screen {bytes(self.screen)!r}"
                ) from None
        return bytes(self.screen)


@asynccontextmanager
async def open_page(
    application: Any,
    slug: str,
    *,
    cookie: str | None,
    origin: str | None = ORIGIN,
    host: str = HOST,
    **query: Any,
):
    """A connected (or refused) terminal socket; yields (connected, close code or None, Page)."""
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if cookie is not None:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    path = f"/ws/clusters/{slug}/terminal/"
    if query:
        path += "?" + urlencode(query)
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect(timeout=10)
    page = Page(communicator)
    try:
        yield connected, (None if connected else code), page
    finally:
        # Done already when a receive timed out (that cancels the application; the test has failed).
        if not communicator.future.done():
            await communicator.disconnect()


async def close_thread_connections() -> None:
    """Close the database connection of the thread that ran this test's ORM calls (and the consumer's).

    With PostgreSQL it would otherwise stay open (CONN_MAX_AGE) and block dropping the test database.
    """
    await sync_to_async(connections.close_all)()


async def end_all_terminals() -> None:
    """End every shell this process still holds, so no process of a test's Linux user lingers."""
    for terminal in live.running():
        await terminal.end("closed", "The test is over.")
