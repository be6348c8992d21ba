"""The shell keeper (terminal.keeper): shells that outlive the web worker, all of it as real processes.

The keeper runs as `manage.py keep_shells` on a socket in a private directory; the web side is the console's
ASGI app in this process (Channels' WebsocketCommunicator) or web workers (uvicorn) of their own
(tests/support/keeper_support.py). Shells are real login shells of a real provisioned person.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from access.models import Grant
from accounts import offboarding, provisioning
from audit.models import AuditEvent
from clusterra_site.asgi import application
from terminal import keeper, live
from terminal.consumer import CLOSED_CODE, LOST_CODE
from terminal.keeper_link import UNREACHABLE
from terminal.models import TerminalPolicy, TerminalSession
from tests.conftest import REPO, require
from tests.support.keeper_support import PYTHON, Keeper, Worker, environment, socket_page
from tests.support.terminal_support import open_page, processes_of, session_cookie

# `cluster`, `linux_person` and `real_person` come from tests/terminal/conftest.py.
pytestmark = [
    pytest.mark.root,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("_no_connection_left_open"),
]

_PID = re.compile(rb"[\r\n]pid-(\d+)\r\n")


@pytest.fixture
def socket_path(tmp_path, settings) -> Path:
    """Where the keeper listens: a private directory of the test's own; the console is pointed at it."""
    require(
        bool(os.environ.get("REDIS_URL")), "the shell keeper needs REDIS_URL (offboarding reaches it there)"
    )
    directory = tmp_path / "shells"
    directory.mkdir(mode=0o700)
    settings.CLUSTERRA_SHELL_KEEPER = str(directory / "keeper.sock")
    settings.CLUSTERRA_RECORDINGS_DIR = str(tmp_path / "recordings")
    return directory / "keeper.sock"


@pytest.fixture
def keepers(real_person, socket_path):
    """Starts keepers on `socket_path`; each stops (its shells ended, rows written) before the person goes."""
    started: list[Keeper] = []

    def start(**options) -> Keeper:
        started.append(Keeper(socket_path, **options).start())
        return started[-1]

    yield start
    for each in started:
        each.stop()


@pytest.fixture
def workers(keepers, socket_path, tmp_path):
    """Starts web workers whose shells live in the keeper; each is stopped before the keeper."""
    started: list[Worker] = []

    async def start() -> Worker:
        started.append(await asyncio.to_thread(Worker(socket_path, tmp_path).start))
        return started[-1]

    yield start
    for each in started:
        each.stop()


async def shell_pid(page) -> int:
    """The PID of the shell behind `page` (its `$$`)."""
    start = len(page.screen)
    await page.type(b"echo pid-$$\r")
    deadline = asyncio.get_running_loop().time() + 5
    while not (found := _PID.search(bytes(page.screen[start:]))):
        await page._next(deadline)
    return int(found[1])


async def name_of(person) -> str:
    return await sync_to_async(lambda: person.posix_account.username)()


def rows_of(person) -> list[TerminalSession]:
    return list(TerminalSession.objects.filter(person=person).order_by("id"))


async def ended_row(pk: int, timeout: float = 10) -> TerminalSession:
    deadline = time.monotonic() + timeout
    while True:
        row = await sync_to_async(TerminalSession.objects.get)(pk=pk)
        if row.ended is not None:
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"terminal {pk} still open after {timeout} s")
        await asyncio.sleep(0.05)


async def no_processes_of(name: str, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := processes_of(name)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return left


async def drop(page) -> None:
    """The laptop lid closes on an in-process page: the socket goes without a close message."""
    await page.communicator.disconnect(code=1006)
    page.close_code = 1006


# ---- shells outlive their workers ---------------------------------------------------------------


async def test_a_shell_is_reattached_through_another_worker_and_outlives_every_worker(
    real_person, cluster, keepers, workers
):
    keepers()
    first, second = await asyncio.gather(workers(), workers())
    cookie = await session_cookie(real_person)
    name = await name_of(real_person)

    async with socket_page(first, cluster.slug, cookie=cookie) as page:
        status = await page.connected(timeout=15)
        await page.prompt()
        pid = await shell_pid(page)
        # Output that comes while no page watches is kept by the keeper and replayed to the next page.
        await page.type(b"sleep 1; echo missed-$((6*7))\r")
        await page.until_screen(b"echo missed-$((6*7))")
        page.communicator.drop()
    assert live.running() == [], "the shell is the keeper's, not this process's"
    await asyncio.sleep(1.5)

    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        page = await stack.enter_async_context(
            socket_page(second, cluster.slug, cookie=cookie, resume=status["resume"])
        )
        again = await page.connected()
        reattach_ms = (time.monotonic() - started) * 1000
        assert again["resumed"] is True
        assert again["session"] == status["session"]
        assert again["message"] == f"Reconnected to your shell as {name} on This host."
        # The first thing on the new page: what the shell wrote after the old one went.
        assert (await page.until_screen(b"missed-42\r\n")).startswith(b"missed-42\r\n")
        assert await shell_pid(page) == pid
        shells = {again["resume"]: pid}
        # Two more shells through the second worker, all three attached when every worker is killed.
        for _ in range(2):
            other = await stack.enter_async_context(socket_page(second, cluster.slug, cookie=cookie))
            opened = await other.connected()
            await other.prompt()
            shells[opened["resume"]] = await shell_pid(other)
        first.kill()
        second.kill()
        assert await page.until_closed() == 1006

    open_rows = await sync_to_async(lambda: [r for r in rows_of(real_person) if r.ended is None])()
    assert len(open_rows) == 3, "a killed worker ends no shell, and writes no end for one"
    third = await workers()
    survived, resume_ms = 0, []
    for token, pid in shells.items():
        started = time.monotonic()
        async with socket_page(third, cluster.slug, cookie=cookie, resume=token) as page:
            status = await page.connected()
            resume_ms.append((time.monotonic() - started) * 1000)
            if status["resumed"] and await shell_pid(page) == pid:
                survived += 1
            await page.control({"type": "close"})
            closed = await page.until_control("closed")
            assert await page.until_closed() == CLOSED_CODE
        assert closed == {"type": "closed", "code": "closed", "reason": "You closed the terminal."}

    rows = await sync_to_async(rows_of)(real_person)
    assert [(r.end_reason, r.ended is not None) for r in rows] == [("closed", True)] * 3
    assert await no_processes_of(name) == []
    print(
        f"shell keeper: reattached through another worker in {reattach_ms:.0f} ms with the missed output "
        f"replayed; {survived} of {len(shells)} shells survived killing every web worker "
        f"(resumed through a new one in {max(resume_ms):.0f} ms at most)"
    )
    assert survived == len(shells)


async def test_a_recording_goes_on_across_a_reattach(real_person, cluster, keepers, socket_path):
    await sync_to_async(TerminalPolicy.objects.create)(cluster=cluster, record=True)
    keepers()
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie, cols=90, rows=25) as (_, _, page):
        status = await page.connected()
        assert status["recorded"] is True
        await page.run("echo first-$((6*7))", "first-42")
        await drop(page)
    async with open_page(
        application, cluster.slug, cookie=cookie, cols=120, rows=40, resume=status["resume"]
    ) as (_, _, page):
        assert (await page.connected())["resumed"] is True
        await page.type(b"echo second-$((6*7))\r")
        await page.until_line("second-42")
        await page.type(b"exit\r")
        closed = await page.until_control("closed")
    assert (closed["code"], closed["exit_status"]) == ("shell_exited", 0)

    row = await ended_row(status["session"])
    casts = list((socket_path.parent.parent / "recordings").rglob("*.cast"))
    assert [str(c) for c in casts] == [row.recording]
    lines = Path(row.recording).read_text().splitlines()
    events = [json.loads(line) for line in lines[1:]]
    output = "".join(data for _, kind, data in events if kind == "o")
    # Both attachments' answers, each on a line of its own, in the one file.
    assert re.search(r"[\r\n]first-42\r\n", output), output
    assert re.search(r"[\r\n]second-42\r\n", output), output
    assert ["r", "120x40"] in [event[1:] for event in events], "the reattached page's size is recorded"


# ---- limits and notices run in the keeper -------------------------------------------------------


async def test_the_idle_limit_ends_a_shell_whose_page_is_away(real_person, cluster, keepers):
    cluster.terminal_idle_timeout = 6  # minutes of half a second: 3 s
    await sync_to_async(cluster.save)()
    keepers(minute=0.5)
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        status = await page.connected()
        await drop(page)
    assert not [c for c in page.controls if c["type"] == "closed"]

    row = await ended_row(status["session"])
    assert (row.end_reason, row.end_message) == (
        "idle_timeout",
        "Closed after 6 minutes without a keystroke (the idle limit on This host).",
    )
    assert await no_processes_of(await name_of(real_person)) == []


async def test_the_maximum_length_counts_across_a_reattach(real_person, cluster, keepers):
    keepers(minute=0.5, CLUSTERRA_TERMINAL_MAX_MINUTES="8")  # 4 s
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        status = await page.connected()
        await drop(page)
    await asyncio.sleep(1)
    async with open_page(application, cluster.slug, cookie=cookie, resume=status["resume"]) as (_, _, page):
        assert (await page.connected())["resumed"] is True
        await page.until_control("warning", kind="max_length", timeout=5)
        closed = await page.until_control("closed", timeout=5)
    assert closed["code"] == "max_length"
    assert closed["reason"].startswith(
        "Closed after 8 minutes, the longest a terminal may stay open on This host"
    )
    assert (await ended_row(status["session"])).end_reason == "max_length"


async def test_the_clusters_resume_window_decides_how_long_a_shell_waits(
    real_person, cluster, keepers, settings
):
    settings.CLUSTERRA_TERMINAL_RESUME_SECONDS = 600
    await sync_to_async(TerminalPolicy.objects.create)(cluster=cluster, resume_minutes=2)  # 1 s here
    keepers(minute=0.5)
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        status = await page.connected()
        await drop(page)
    row = await ended_row(status["session"], timeout=5)
    assert (row.end_reason, row.end_message) == (
        "disconnected",
        "The browser disconnected and did not come back within 2 minutes.",
    )


async def test_offboarding_ends_a_shell_whether_its_page_is_there_or_not(real_person, cluster, keepers):
    keepers()
    name = await name_of(real_person)
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        away = await page.connected()
        await page.run("sleep 300 & echo started", "started")
        await drop(page)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        here = await page.connected()
        await page.run("echo here", "here")
        started = time.monotonic()
        result = await sync_to_async(offboarding.offboard)(real_person, by="test", reason="contract ended")
        closed = await page.until_control("closed", timeout=5)
        attached_ms = (time.monotonic() - started) * 1000
    assert result.ok, result.problems
    sentence = "Your access to the console was removed (contract ended), so this terminal was closed."
    assert (closed["code"], closed["reason"]) == ("offboarded", sentence)
    for session in (here["session"], away["session"]):
        row = await ended_row(session)
        assert (row.end_reason, row.end_message) == ("offboarded", sentence)
    assert await no_processes_of(name) == []
    assert attached_ms < 5000


async def test_a_withdrawn_grant_reaches_a_shell_whose_page_is_away(real_person, cluster, keepers):
    """Unlike offboarding, withdrawing a grant kills no process: only the keeper hearing it ends the shell."""
    keepers()
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        status = await page.connected()
        await page.run("echo ready", "ready")
        await drop(page)

    def withdraw() -> None:
        grant = Grant.objects.get(cluster=cluster, user=real_person)
        grant.terminal = False
        grant.save()

    await sync_to_async(withdraw)()
    row = await ended_row(status["session"], timeout=5)
    assert row.end_reason == "withdrawn"
    assert row.end_message.endswith("This terminal was closed.")
    assert await no_processes_of(await name_of(real_person)) == []


# ---- the keeper gone, the keeper attacked --------------------------------------------------------


async def test_a_keeper_that_cannot_be_reached_is_said_so(real_person, cluster, keepers):
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        closed = await page.until_control("closed", timeout=10)
        assert await page.until_closed() == CLOSED_CODE
    assert closed == {"type": "closed", "code": "transport", "reason": UNREACHABLE}
    assert not await sync_to_async(TerminalSession.objects.exists)()
    event = await sync_to_async(AuditEvent.objects.get)(action="terminal.failed")
    assert (event.outcome, event.reason, event.message) == ("error", "keeper", UNREACHABLE)

    # A keeper that dies under a page: the page is told to reconnect, not that its terminal ended ...
    first = keepers()
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        status = await page.connected()
        await page.run("echo up", "up")
        first.kill()
        assert await page.until_closed() == LOST_CODE
    assert not [c for c in page.controls if c["type"] == "closed"]
    # ... and its reconnect, finding no keeper, says why no terminal opens.
    async with open_page(application, cluster.slug, cookie=cookie, resume=status["resume"]) as (_, _, page):
        closed = await page.until_control("closed", timeout=10)
    assert closed["reason"] == UNREACHABLE

    # The next keeper ends the row its killed predecessor left open, and the page gets a new shell.
    keepers()
    row = await ended_row(status["session"], timeout=1)
    assert row.end_reason == "error"
    async with open_page(application, cluster.slug, cookie=cookie, resume=status["resume"]) as (_, _, page):
        fresh = await page.connected()
    assert fresh["resumed"] is False
    assert "could not be resumed, so this is a new one" in fresh["message"]


async def test_a_keeper_stopped_ends_its_shells_and_says_so(real_person, cluster, keepers):
    running = keepers()
    name = await name_of(real_person)
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        status = await page.connected()
        await page.run("sleep 300 & echo started", "started")
        # As systemd stops it for an upgrade.
        assert await asyncio.to_thread(running.stop) == 0
        closed = await page.until_control("closed")
        assert await page.until_closed() == CLOSED_CODE
    assert closed == {"type": "closed", "code": "error", "reason": keeper.STOPPED}
    row = await ended_row(status["session"], timeout=1)
    assert (row.end_reason, row.end_message) == ("error", keeper.STOPPED)
    assert await no_processes_of(name) == []
    assert not running.path.exists()


async def test_a_person_cannot_reach_the_keepers_socket(real_person, cluster, keepers, socket_path):
    require(bool(shutil.which("setpriv")), "needs setpriv (util-linux)")
    keepers()
    account = await sync_to_async(provisioning.ready_account)(real_person, cluster)
    probe = (
        "import errno, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1]); print('connected')\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
    )
    as_person = [
        "setpriv",
        f"--reuid={account.uid}",
        f"--regid={account.gid}",
        "--init-groups",
        "/usr/bin/python3",
        "-c",
        probe,
        str(socket_path),
    ]
    answer = subprocess.run(as_person, capture_output=True, text=True, timeout=30, cwd="/")
    assert answer.stdout.strip() == "EACCES", answer
    as_root = subprocess.run(as_person[4:], capture_output=True, text=True, timeout=30)
    assert as_root.stdout.strip() == "connected"


async def test_the_keeper_refuses_a_socket_directory_others_can_enter(real_person, cluster, tmp_path):
    require(bool(os.environ.get("REDIS_URL")), "the shell keeper needs REDIS_URL")
    account = await sync_to_async(provisioning.ready_account)(real_person, cluster)

    def keep(directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
        command = [PYTHON, "manage.py", "keep_shells", "--socket", str(directory / "keeper.sock")]
        return subprocess.run(
            command, cwd=REPO, env=environment(**env), capture_output=True, text=True, timeout=60
        )

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, account.uid, account.gid)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)

    refused = keep(shared)
    assert refused.returncode == 1
    assert f"{shared} is open to others (mode 750)" in refused.stderr
    refused = keep(theirs)
    assert refused.returncode == 1
    assert f"{theirs} belongs to uid {account.uid}, not to the keeper's user" in refused.stderr
    refused = keep(private, REDIS_URL="")
    assert refused.returncode == 1
    assert "The shell keeper needs REDIS_URL" in refused.stderr
    assert not (shared / "keeper.sock").exists()
    assert not (theirs / "keeper.sock").exists()


async def _exchange(path: Path, raw: bytes) -> bytes:
    """Send `raw` on a connection of its own, then whatever the keeper answers before it closes."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(raw)
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def _frame(kind: bytes, payload: bytes) -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


def _control(message: object) -> bytes:
    return _frame(b"J", json.dumps(message).encode())


async def test_malformed_frames_close_their_connection_and_nothing_else(
    real_person, cluster, keepers, socket_path
):
    running = keepers()
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, watched):
        await watched.connected()
        await watched.run("export MARK=kept-$((6*7)); echo set", "set")
        async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
            away = await page.connected()
            await page.run("export MARK=away-$((6*7)); echo set", "set")
            await drop(page)

        garbage = [
            b"X\x00\x00\x00\x01a",  # no such kind
            b"J\xff\xff\xff\xff",  # 4 GiB announced: refused, not allocated
            b"D" + (keeper.MAX_DATA + 1).to_bytes(4, "big"),
            b"J\x00\x00",  # cut inside the header
            _frame(b"J", b"{not json"),
            _frame(b"J", b"[1, 2]"),
            _frame(b"D", b"ls\r"),  # keystrokes before saying which shell
            _control({"op": "open", "person": "1", "cluster": cluster.slug}),
            _control({"op": "resume", "token": "x" * 5000, "person": 1, "cluster": cluster.slug}),
            _control({"op": "format the disk"}),
        ]
        for raw in garbage:
            assert await _exchange(socket_path, raw) == b"", raw
        assert running.alive

        # A connection that breaks the rules once attached loses itself only: the shell waits for its page.
        person = await sync_to_async(lambda: real_person.pk)()
        resume = {"op": "resume", "token": away["resume"], "person": person, "cluster": cluster.slug}
        answer = await _exchange(socket_path, _control(resume) + _control({"op": "resize", "cols": "wide"}))
        assert b'"op":"opened"' in answer
        assert b'"op":"caught_up"' in answer
        assert running.alive
        await watched.run("echo $MARK", "kept-42")
    async with open_page(application, cluster.slug, cookie=cookie, resume=away["resume"]) as (_, _, page):
        assert (await page.connected())["resumed"] is True
        await page.type(b"echo $MARK\r")
        await page.until_line("away-42")
    assert "broke the protocol" in running.output()


async def test_an_opening_the_worker_gives_up_on_leaves_no_shell(real_person, cluster, keepers, socket_path):
    keepers()
    account = await sync_to_async(provisioning.ready_account)(real_person, cluster)
    person = await sync_to_async(lambda: real_person.pk)()
    opening = {
        "op": "open",
        "person": person,
        "cluster": cluster.slug,
        "posix_user": account.username,
        "cwd": "",
        "cols": 80,
        "rows": 24,
        "client": ["192.0.2.7", 50000],
    }
    why = "The browser went away before the terminal had opened."
    ending = _control({"op": "end", "reason": "closed", "message": why})
    # Given up on at once: nothing starts, or what had begun ends.
    assert await _exchange(socket_path, _control(opening) + ending) == b""
    # Given up on once the keeper had begun (its row exists): the row ends with the worker's reason,
    # as failed if the shell had not started yet, as closed if it had in that very moment.
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    writer.write(_control(opening))
    rows: list[TerminalSession] = []
    while not (rows := await sync_to_async(rows_of)(real_person)) or rows[-1].ended is not None:
        await asyncio.sleep(0.005)
    writer.write(ending)
    await asyncio.wait_for(reader.read(), 10)
    writer.close()
    for row in await sync_to_async(rows_of)(real_person):
        row = await ended_row(row.pk)
        assert (row.end_reason, row.end_message) in (("failed", why), ("closed", why))
        assert row.client_address == "192.0.2.7"
    assert len(rows) in (1, 2)
    assert await no_processes_of(account.username) == []
