"""The terminal WebSocket on the real ASGI app: who gets in, and a real shell as a real provisioned person."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import channels.consumer
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import Group

from access.models import Grant
from accounts import backchannel, offboarding
from accounts.models import User
from audit.models import AuditEvent
from clusterra_site.asgi import application
from terminal import live
from terminal.consumer import CLOSED_CODE, REFUSED_ORIGIN, REFUSED_SIGNED_OUT
from terminal.models import TerminalSession
from tests.support.terminal_support import (
    open_page,
    processes_of,
    session_cookie,
)

# `cluster`, `linux_person` and `real_person` come from tests/terminal/conftest.py.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("_no_connection_left_open"),
]


def row_of(person: User) -> TerminalSession:
    return TerminalSession.objects.get(person=person)


# --- who gets in ------------------------------------------------------------------------------------


async def test_it_refuses_an_anonymous_socket(cluster):
    async with open_page(application, cluster.slug, cookie=None) as (connected, code, _):
        assert not connected
        assert code == REFUSED_SIGNED_OUT


async def test_it_refuses_another_sites_page(cluster):
    person = await sync_to_async(User.objects.create)(username="eve", email="eve@corp.example")
    cookie = await session_cookie(person)
    # A host not in ALLOWED_HOSTS: Channels' validator refuses before the consumer runs.
    async with open_page(application, cluster.slug, cookie=cookie, origin="http://evil.example") as result:
        assert result[0] is False
    # An allowed host name on another port (another app on the same machine): the consumer refuses.
    async with open_page(application, cluster.slug, cookie=cookie, origin="http://127.0.0.1:9999") as result:
        assert result[:2] == (False, REFUSED_ORIGIN)
    async with open_page(application, cluster.slug, cookie=cookie, origin=None) as result:
        assert result[0] is False
    assert not await sync_to_async(TerminalSession.objects.exists)()


async def test_a_policy_denial_closes_with_the_decisions_sentence(cluster):
    person = await sync_to_async(User.objects.create)(username="ned", email="ned@corp.example")
    cookie = await session_cookie(person)
    async with open_page(application, cluster.slug, cookie=cookie) as (connected, _, page):
        assert connected
        closed = await page.until_control("closed")
        assert await page.until_closed() == CLOSED_CODE

    assert closed["code"] == "no_grant"
    assert closed["reason"] == "You have no access to This host; ask an administrator for a grant."
    assert not await sync_to_async(TerminalSession.objects.exists)()
    event = await sync_to_async(AuditEvent.objects.get)(action="terminal.open")
    assert (event.outcome, event.reason) == ("denied", "no_grant")


async def test_an_unknown_cluster_is_named_in_the_closing_sentence(real_person):
    cookie = await session_cookie(real_person)
    async with open_page(application, "nowhere", cookie=cookie) as (connected, _, page):
        assert connected
        closed = await page.until_control("closed")
    assert closed["reason"] == "There is no cluster called 'nowhere' in the console."


# --- a real shell as the person ----------------------------------------------------------------------


@pytest.mark.root
async def test_it_opens_a_login_shell_as_the_persons_own_user(real_person, cluster):
    name = await sync_to_async(lambda: real_person.posix_account.username)()
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (connected, _, page):
        assert connected
        status = await page.connected()
        assert status["user"] == name
        assert status["message"] == f"Connected as {name} on This host."
        assert status["recorded"] is False
        await page.run("id -un", name)
        await page.run("pwd", f"/home/{name}")
        await page.run(
            "echo $HOME:$USER:$TERM:${DATABASE_URL-unset}", f"/home/{name}:{name}:xterm-256color:unset"
        )
        await page.control({"type": "close"})
        closed = await page.until_control("closed")
        await page.until_closed()

    assert closed == {"type": "closed", "code": "closed", "reason": "You closed the terminal."}
    row = await sync_to_async(row_of)(real_person)
    assert (row.posix_user, row.transport, row.cluster_slug) == (name, "local", cluster.slug)
    assert row.transport_session_id.startswith("pty-")
    assert (row.end_reason, row.end_message) == ("closed", "You closed the terminal.")
    assert row.bytes_in == len(b"id -un\rpwd\recho $HOME:$USER:$TERM:${DATABASE_URL-unset}\r")
    assert row.bytes_out == page.received_bytes > 0
    assert row.ended > row.started
    actions = await sync_to_async(
        lambda: list(
            AuditEvent.objects.filter(action__startswith="terminal.")
            .order_by("id")
            .values_list("action", "reason")
        )
    )()
    assert actions == [("terminal.opened", ""), ("terminal.closed", "closed")]
    assert processes_of(name) == []


@pytest.mark.root
async def test_it_starts_in_the_requested_directory_or_says_why_not(real_person, cluster, tmp_path):
    name = await sync_to_async(lambda: real_person.posix_account.username)()
    cookie = await session_cookie(real_person)
    # Provisioned on first open, so the project folder is made after that and owned by the person.
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        await page.run("mkdir -p ~/project/run\\ 1 && echo made", "made")

    async with open_page(application, cluster.slug, cookie=cookie, cwd=f"/home/{name}/project/run 1") as (
        _,
        _,
        page,
    ):
        await page.connected()
        await page.run("pwd", f"/home/{name}/project/run 1")

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    async with open_page(application, cluster.slug, cookie=cookie, cwd=str(private)) as (_, _, page):
        await page.connected()
        await page.until_screen(
            f"clusterra: {private} cannot be entered; starting in your home directory".encode()
        )
        await page.run("pwd", f"/home/{name}")

    async with open_page(application, cluster.slug, cookie=cookie, cwd="relative/path") as (_, _, page):
        closed = await page.until_control("closed")
    assert closed["code"] == "bad_cwd"
    assert "must be an absolute path" in closed["reason"]


@pytest.mark.root
async def test_the_shell_follows_the_browsers_size(real_person, cluster):
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie, cols=100, rows=30) as (_, _, page):
        await page.connected()
        await page.run("stty size", "30 100")
        await page.control({"type": "resize", "cols": 132, "rows": 43})
        await page.run("stty size", "43 132")
        # Nonsense sizes are clamped, not passed to the kernel.
        await page.control({"type": "resize", "cols": -5, "rows": 10**9})
        await page.run("stty size", "500 2")


@pytest.mark.root
async def test_a_keystroke_frame_skips_the_database_connection_hop(real_person, cluster, monkeypatch):
    # Channels' dispatch awaits aclose_old_connections() (a thread-pool round trip) before each handler;
    # keystrokes never reach the ORM, and that hop was a third of their echo time (bench/README.md).
    hops = []
    original = channels.consumer.aclose_old_connections

    async def counted() -> None:
        hops.append(1)
        await original()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        await page.prompt()
        before = len(hops)
        for key in b"echo typed-$((40+2))\r":
            await page.type(bytes([key]))
        await page.until_line("typed-42")
        after_keys = len(hops)
        # A control frame may end the terminal and write its row: it keeps the hop (and the spy sees it).
        await page.control({"type": "resize", "cols": 90, "rows": 30})
        await page.run("stty size", "30 90")

    assert after_keys == before
    assert len(hops) > after_keys


@pytest.mark.root
async def test_idle_warns_then_closes_and_only_keystrokes_count(real_person, cluster, monkeypatch):
    # Two "minutes" of one second each: a warning half-way (the lead is a minute, capped at half).
    monkeypatch.setattr(live, "MINUTE", 0.5)
    cluster.terminal_idle_timeout = 2
    await sync_to_async(cluster.save)()
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        first = await page.until_control("warning", kind="idle")
        assert first["seconds"] == 1
        # A keystroke withdraws the warning and restarts the clock ...
        await page.type(b"echo still-here\r")
        await page.until_control("warning", kind="idle", seconds=None)
        # ... while output alone does not count as activity.
        await page.run(
            "(for i in 1 2 3 4 5 6 7 8; do echo tick; sleep 0.1; done; echo done-ticking) &", "tick"
        )
        await page.until_control("warning", kind="idle", seconds=1)
        closed = await page.until_control("closed", timeout=3)
        assert await page.until_closed() == CLOSED_CODE

    assert closed["code"] == "idle_timeout"
    assert closed["reason"] == "Closed after 2 minutes without a keystroke (the idle limit on This host)."
    row = await sync_to_async(row_of)(real_person)
    assert (row.end_reason, row.end_message) == ("idle_timeout", closed["reason"])


@pytest.mark.root
async def test_a_maximum_length_warns_then_closes(real_person, cluster, monkeypatch, settings):
    monkeypatch.setattr(live, "MINUTE", 0.4)
    settings.CLUSTERRA_TERMINAL_MAX_MINUTES = 1
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        await page.until_control("warning", kind="max_length")
        closed = await page.until_control("closed", timeout=3)

    assert closed["code"] == "max_length"
    assert "the longest a terminal may stay open on This host" in closed["reason"]


@pytest.mark.root
async def test_offboarding_closes_a_live_terminal_at_once(real_person, cluster):
    name = await sync_to_async(lambda: real_person.posix_account.username)()
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        await page.run("sleep 300 & echo started", "started")

        result = await sync_to_async(offboarding.offboard)(real_person, by="test", reason="left the company")
        closed = await page.until_control("closed", timeout=2)
        await page.until_closed(timeout=2)

    assert result.ok, result.problems
    assert closed["code"] == "offboarded"
    assert closed["reason"] == (
        "Your access to the console was removed (left the company), so this terminal was closed."
    )
    row = await sync_to_async(row_of)(real_person)
    assert row.end_reason == "offboarded"
    # The hang-up reached the background job too.
    assert processes_of(name) == []


@pytest.mark.root
async def test_a_dropped_connection_gets_the_same_shell_back(real_person, cluster):
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        status = await page.connected()
        await page.run("export MARK=kept-$((6*7)); echo set", "set")
        # The laptop lid closes: the socket goes without a close message, the shell stays.
        await page.communicator.disconnect(code=1006)
        page.close_code = 1006
        await page.communicator.wait(1)

    assert len(live.running()) == 1
    async with open_page(application, cluster.slug, cookie=cookie, resume=status["resume"]) as (_, _, page):
        again = await page.connected()
        assert again["resumed"] is True
        assert again["message"].startswith("Reconnected to your shell as")
        assert again["session"] == status["session"]
        # The prompt is already on the browser's screen from before; the answer comes on a line of its own.
        await page.type(b"echo $MARK\r")
        await page.until_line("kept-42")

    # Someone else's token (or a stale one) never reaches a shell: a new one opens and says so.
    async with open_page(application, cluster.slug, cookie=cookie, resume="not-a-token") as (_, _, page):
        other = await page.connected()
        assert other["resumed"] is False
        assert "could not be resumed, so this is a new one" in other["message"]
        await page.run("echo ${MARK-unset}", "unset")


@pytest.mark.root
async def test_offboarding_also_ends_a_shell_waiting_for_its_browser(real_person, cluster):
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        await page.communicator.disconnect(code=1006)
        page.close_code = 1006
    (terminal,) = live.running()

    await sync_to_async(offboarding.offboard)(real_person, by="test", reason="contract ended")
    async with asyncio.timeout(2):
        await terminal._done.wait()

    row = await sync_to_async(row_of)(real_person)
    assert (row.end_reason, row.ended is not None) == ("offboarded", True)
    assert live.running() == []


@pytest.mark.root
async def test_a_shell_the_browser_never_comes_back_to_is_ended(real_person, cluster, settings):
    settings.CLUSTERRA_TERMINAL_RESUME_SECONDS = 1
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        await page.run("echo hi", "hi")
    (terminal,) = live.running()
    await terminal._done.wait()

    row = await sync_to_async(row_of)(real_person)
    assert row.end_reason == "disconnected"
    assert row.end_message == "The browser disconnected and did not come back within 1 seconds."


@pytest.mark.root
async def test_exiting_the_shell_ends_the_terminal_with_its_status(real_person, cluster):
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        await page.type(b"exit 3\r")
        closed = await page.until_control("closed")

    # The status too, so the page can tell a shell the person left (0) from one that failed.
    assert closed == {
        "type": "closed",
        "code": "shell_exited",
        "reason": "The shell ended (exit status 3).",
        "exit_status": 3,
    }


@pytest.mark.root
async def test_a_withdrawn_terminal_grant_closes_the_live_shell_on_that_cluster(real_person, cluster):
    name = await sync_to_async(lambda: real_person.posix_account.username)()
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        await page.run("sleep 300 & echo started", "started")

        def withdraw() -> None:
            grant = Grant.objects.get(cluster=cluster, user=real_person)
            grant.terminal = False
            grant.save()

        await sync_to_async(withdraw)()
        closed = await page.until_control("closed", timeout=3)
        await page.until_closed(timeout=3)

    assert closed["code"] == "withdrawn"
    assert closed["reason"] == (
        "Your access to This host does not include the browser terminal; ask an administrator "
        "to allow it. This terminal was closed."
    )
    row = await sync_to_async(row_of)(real_person)
    assert row.end_reason == "withdrawn"
    assert processes_of(name) == []


@pytest.mark.root
async def test_leaving_the_group_that_granted_the_terminal_closes_it(real_person, cluster):
    def through_a_group() -> None:
        team = Group.objects.create(name="hpc-users")
        Grant.objects.filter(cluster=cluster, user=real_person).delete()
        Grant.objects.create(cluster=cluster, group=team, terminal=True)
        real_person.groups.add(team)

    await sync_to_async(through_a_group)()
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        await sync_to_async(lambda: real_person.groups.remove(Group.objects.get(name="hpc-users")))()
        closed = await page.until_control("closed", timeout=3)
        await page.until_closed(timeout=3)

    assert closed["code"] == "withdrawn"
    assert closed["reason"].startswith("You have no access to This host; ask an administrator for a grant.")


@pytest.mark.root
async def test_a_logout_at_the_idp_closes_live_shells_on_every_cluster(real_person, cluster):
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        # What accounts.backchannel does once a valid logout token ended the person's sessions.
        await sync_to_async(backchannel._close_terminals)(real_person.pk)
        closed = await page.until_control("closed", timeout=3)
        await page.until_closed(timeout=3)
    assert closed["code"] == "withdrawn"
    assert closed["reason"] == "You signed out at your identity provider. This terminal was closed."


@pytest.mark.root
async def test_keystrokes_written_into_the_channel_layer_never_reach_a_shell(real_person, cluster):
    """The layer is shared (Redis on loopback); a message shaped like the browser's typing is dropped."""
    name = await sync_to_async(lambda: real_person.posix_account.username)()
    marker = Path(f"/home/{name}/pwned")  # somewhere their shell could write
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        layer = get_channel_layer()
        forged = {"type": "websocket.receive", "bytes": f"touch {marker}\r".encode(), "text": None}
        await layer.group_send(offboarding.person_group(real_person.pk), forged)
        await layer.group_send(
            offboarding.person_group(real_person.pk), {"type": "websocket.disconnect", "code": 1000}
        )
        await page.run("echo still-here", "still-here")
    assert not marker.exists()


@pytest.mark.root
async def test_a_clusters_own_slurm_commands_come_first_in_its_terminal(real_person, cluster):
    """On a cluster whose Slurm is not the host's (slurm_bin: a chroot release here, /opt/slurm/bin on
    ParallelCluster), `sbatch` in the person's login shell is that cluster's, not the one on the PATH."""
    from tests.conftest import read_slurm_env, require, slurm_env_file

    release = read_slurm_env(slurm_env_file("26.05"))
    require(release is not None, "Slurm 26.05 not running: run SLURM_RELEASE=26.05 scripts/slurm-up.sh")
    require(os.path.exists("/etc/profile.d/clusterra-slurm.sh"), "scripts/slurm-release.sh did not run")
    cluster.slurm_bin = release.bin
    await sync_to_async(cluster.save)(update_fields=["slurm_bin"])
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie) as (connected, _, page):
        assert connected
        await page.connected()
        await page.run("command -v sbatch", f"{release.bin}/sbatch")
        await page.run("sbatch --version | cut -d. -f1,2", "slurm-wlm 26.05")  # Debian names its build so
        await page.control({"type": "close"})
        await page.until_closed()
