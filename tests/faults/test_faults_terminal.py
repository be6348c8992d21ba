"""Faults a terminal survives without the person noticing: the SSM data channel cut under their fingers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import threading
from difflib import SequenceMatcher

import pytest
from asgiref.sync import sync_to_async

from accounts import posix
from accounts.models import User
from clusterra_site.asgi import application
from clusters import headnode
from terminal import live, transports
from terminal.transports import local
from terminal.transports.ssm import SessionManager, login_command
from tests.conftest import require
from tests.support.fake_headnode import FakeHeadNode
from tests.support.ssm_agent import (
    REGION,
    TARGET,
    TEST_CREDENTIALS,
    AgentBehaviour,
    StubbedSsm,
)
from tests.support.terminal_support import (
    grant_terminal,
    open_page,
    session_cookie,
    ssm_cluster,
)

pytestmark = pytest.mark.asyncio

KEYSTROKES = 200
# The agent swallows the input message carrying this byte and drops the socket with no close frame;
# it appears once, in the middle of the stream, so exactly one message is lost on the wire.
CUT_MARK = b"@"


def keystroke_stream() -> list[bytes]:
    """Printable keys in a known order, Enter every 25th, the cut mark at the middle: one byte each."""
    keys = []
    for i in range(KEYSTROKES):
        if i == KEYSTROKES // 2:
            keys.append(CUT_MARK)
        elif i % 25 == 24:
            keys.append(b"\r")
        else:
            keys.append(bytes([ord("a") + i % 26]))
    return keys


@pytest.fixture
def cluster(settings, monkeypatch, _no_connection_left_open):
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = 60200, 60299
    # Provisioning on an SSM head node runs through SendCommand; a pretend head node answers here.
    monkeypatch.setattr(headnode, "run", FakeHeadNode())
    return ssm_cluster(instance_id=TARGET, region=REGION)


@pytest.fixture
def person(cluster):
    person = User.objects.create(username="carol", email="carol@corp.example")
    grant_terminal(person, cluster)
    return person


@pytest.mark.django_db(transaction=True)  # async, reaching the database from worker threads
async def test_a_cut_ssm_socket_mid_session_loses_no_keystroke_and_the_page_never_notices(
    agent, cluster, person, monkeypatch
):
    name = await sync_to_async(lambda: posix.ensure_account(person).username)()
    session = agent.new_session(AgentBehaviour(require_sigv4=TEST_CREDENTIALS, cut_on_input=CUT_MARK))
    stub = StubbedSsm(
        agent,
        session,
        command=login_command(name),
        reason=f"Clusterra terminal of carol as {name}",
        resumes=1,
    )
    monkeypatch.setattr(
        transports, "ssm_manager", lambda _: SessionManager(stub.client, credentials=TEST_CREDENTIALS)
    )
    keys = keystroke_stream()
    middle = KEYSTROKES // 2
    cookie = await session_cookie(person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        # The shell writes every key it is given to a file; at the end the file is the proof. Typing starts
        # once the shell has left readline (which reads keys raw, Enter staying a CR) for cat's cooked mode.
        await page.run("echo RE''ADY; cat > keys", "READY")
        for key in keys[:middle]:
            await page.type(key)
        (terminal,) = live.running()
        channel = terminal.transport.channel
        async with asyncio.timeout(5):
            while channel.unacknowledged:
                await asyncio.sleep(0.01)

        await page.type(keys[middle])
        async with asyncio.timeout(5):
            while session.cuts == 0:
                await asyncio.sleep(0.005)
        # The agent has dropped the socket and the console has not got it back yet: typing goes on regardless.
        reconnects_while_typing = channel.reconnects
        for key in keys[middle + 1 :]:
            await page.type(key)
        await page.type(b"\x04")  # the stream ends with Enter, so this ends cat's input
        await page.type(b"wc -c < keys; sha256sum < keys\r")
        expected = b"".join(keys).replace(b"\r", b"\n")
        await page.until_line(f"{hashlib.sha256(expected).hexdigest()}  -", timeout=10)
        await page.until_line(str(len(expected)))

        assert page.close_code is None
        assert [c for c in page.controls if c["type"] == "closed"] == []

    # What the agent wrote into the shell's PTY between the command and the end of input, against what
    # was typed: every keystroke once, in order, or the count says how many went missing or twice.
    typed = b"".join(keys)
    received = bytes(session.pty_input).split(b"cat > keys\r", 1)[1].split(b"\x04", 1)[0]
    matched = sum(
        block.size for block in SequenceMatcher(None, typed, received, autojunk=False).get_matching_blocks()
    )
    lost, doubled = len(typed) - matched, len(received) - matched
    print(
        f"faults survived: SSM socket cut mid-session, {KEYSTROKES} keystrokes, {lost} lost, "
        f"{doubled} doubled ({session.cuts} cut, {channel.reconnects} resume, "
        f"{channel.retransmissions} resent)"
    )
    assert received == typed
    assert (session.cuts, reconnects_while_typing, channel.reconnects) == (1, 0, 1)
    assert session.protocol_errors == []
    assert session.refused == []


# --- many terminals closing at once (a worker shutting down, a mass offboarding) -------------------


def running_members(sids: set[int]) -> list[int]:
    """Processes of these sessions that still run (a zombie waiting for its parent does not count)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) in sids and fields[0] != b"Z":
            found.append(int(entry.name))
    return found


async def test_closing_many_sessions_at_once_scans_proc_once_and_off_the_event_loop(monkeypatch):
    require(bool(shutil.which("setsid")), "needs setsid (util-linux)")
    scans: list[tuple[int, int]] = []
    scan = local._session_members

    def counted(sids: set[int]) -> dict[int, list[int]]:
        scans.append((threading.get_ident(), len(sids)))
        return scan(sids)

    monkeypatch.setattr(local, "_session_members", counted)
    # Each one a session like a local terminal's: setsid's own pid leads it, with a shell and its jobs.
    sessions = [
        await asyncio.create_subprocess_exec("setsid", "sh", "-c", "sleep 60 & sleep 60 & wait")
        for _ in range(20)
    ]
    sids = {process.pid for process in sessions}
    async with asyncio.timeout(5):
        while len(running_members(sids)) < 3 * len(sessions):
            await asyncio.sleep(0.02)

    await asyncio.gather(*(local.signal_session(sid, signal.SIGKILL) for sid in sids))
    async with asyncio.timeout(5):
        for process in sessions:
            await process.wait()
        while running_members(sids):
            await asyncio.sleep(0.02)

    print(
        f"terminals closed at once: {len(sessions)} sessions ({3 * len(sessions)} processes) signalled "
        f"with {len(scans)} /proc scan(s), none on the event loop"
    )
    assert [size for _, size in scans] == [len(sessions)]
    assert threading.get_ident() not in {thread for thread, _ in scans}
