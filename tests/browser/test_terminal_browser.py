"""The terminal page in real Chromium on a live daphne: sign in, type, the shell answers as the person.

Through both transports: `local` (a PTY on this host) and `ssm` (the Session Manager data channel to the
agent emulator of tests/support/ssm_agent.py, whose PTY runs the login command StartSession carried).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from django.test import Client

from accounts.models import User
from audit.models import AuditEvent
from clusters import headnode
from terminal import live, transports
from terminal.models import TerminalSession
from terminal.transports.ssm import SessionManager, login_command
from tests.conftest import REPO, require
from tests.support import live_daphne
from tests.support.ssm_agent import (
    REGION,
    TARGET,
    TEST_CREDENTIALS,
    AgentBehaviour,
    AgentEmulator,
    StubbedSsm,
)
from tests.support.terminal_support import (
    forget_real_person,
    grant_terminal,
    local_cluster,
    new_real_person,
    ssm_cluster,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"
# The longest any one step may take, in seconds: page loads, a shell's answer, a close.
STEP = 5.0
T = TypeVar("T")


def require_browser() -> None:
    require(CHROMIUM.exists(), "Chromium is missing: apt-get install chromium (never `playwright install`)")
    require(importlib.util.find_spec("playwright") is not None, "the playwright package is not installed")


def session_cookie(person: User) -> str:
    client = Client()
    client.force_login(person)
    return client.cookies["sessionid"].value


class LoopThread:
    """An asyncio event loop of its own in a thread: where the agent emulator runs beside Playwright."""

    def __enter__(self) -> LoopThread:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ssm-agent", daemon=True)
        self.thread.start()
        return self

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = STEP) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __exit__(self, *exc_info: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STEP)
        self.loop.close()


# ---- the page ---------------------------------------------------------------------------------------


@contextmanager
def terminal_browser(base: str, cookie: str) -> Iterator[Any]:
    """A Chromium page signed in to the console at `base`; every Playwright wait is bounded by STEP."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 640})
            context.set_default_timeout(STEP * 1000)
            context.add_cookies([{"name": "sessionid", "value": cookie, "url": base}])
            yield context.new_page()
        finally:
            browser.close()


def until(page: Any, expression: str, timeout: float = STEP) -> Any:
    """Poll `expression` in the page until it is truthy, at most `timeout` seconds; returns its value.

    Polled from here, not with wait_for_function: Playwright evaluates that predicate with eval inside
    the page, which the console's Content-Security-Policy (no 'unsafe-eval') rightly refuses.
    """
    deadline = time.monotonic() + timeout
    while not (value := page.evaluate(expression)):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not true within {timeout} s: {expression}\n"
                f"status: {page.inner_text('#status')!r}\nscreen:\n{page.evaluate('termText()')}"
            )
        page.wait_for_timeout(50)
    return value


def state_is(page: Any, state: str) -> None:
    until(page, f"document.getElementById('status').dataset.state === {json.dumps(state)}")


def screen_line(page: Any, text: str) -> None:
    """Wait for `text` as a whole line of the terminal's screen (surrounding blanks aside)."""
    until(page, f"termText().split('\\n').some(l => l.trim() === {json.dumps(text)})")


def prompt(page: Any) -> None:
    until(page, "/\\$ *$/.test(termText())")


def type_line(page: Any, line: str) -> None:
    page.keyboard.type(line)
    page.keyboard.press("Enter")


class SocketTap:
    """Passes every terminal socket of a page through, counting the binary (terminal) bytes each way."""

    def __init__(self) -> None:
        self.to_page = 0
        self.to_server = 0
        self.sockets: list[tuple[Any, Any]] = []

    def __call__(self, to_page: Any) -> None:
        to_server = to_page.connect_to_server()
        self.sockets.append((to_page, to_server))

        def down(message: str | bytes) -> None:
            if isinstance(message, bytes):
                self.to_page += len(message)
            to_page.send(message)

        def up(message: str | bytes) -> None:
            if isinstance(message, bytes):
                self.to_server += len(message)
            to_server.send(message)

        to_server.on_message(down)
        to_page.on_message(up)


def eventually(check: Callable[[], bool], what: str, timeout: float = STEP) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


# ---- local: a PTY on this host ----------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_a_person_types_in_the_browser_and_the_shell_answers_as_them(settings, monkeypatch):
    require_browser()
    cluster = local_cluster()
    person, name = new_real_person(settings)
    grant_terminal(person, cluster)
    # Half-second minutes: a 2-minute idle limit is cut after a second.
    monkeypatch.setattr(live, "MINUTE", 0.5)
    quiet = local_cluster("quiet", name="Quiet host", terminal_idle_timeout=2)
    grant_terminal(person, quiet)
    cookie = session_cookie(person)
    ARTIFACTS.mkdir(exist_ok=True)

    try:
        with live_daphne.in_this_process() as base, terminal_browser(base, cookie) as page:
            # Every terminal socket passes through here, so the test can cut one as a network would.
            tap = SocketTap()
            page.route_web_socket(re.compile(r".*/ws/clusters/.*"), tap)
            page.goto(f"{base}/clusters/{cluster.slug}/terminal/")
            page.wait_for_selector(".xterm-screen")
            state_is(page, "connected")
            assert page.inner_text("#status") == f"Connected as {name} on This host."
            prompt(page)

            page.locator(".xterm-helper-textarea").focus()
            type_line(page, "echo hello-from-browser")
            screen_line(page, "hello-from-browser")
            type_line(page, "whoami")
            screen_line(page, name)
            page.screenshot(path=str(ARTIFACTS / "terminal.png"))

            # The connection drops; the page reconnects by itself and gets the same shell back.
            type_line(page, "export MARK=kept-$((6*7))")
            to_page, to_server = tap.sockets[-1]
            to_server.close(code=1001)
            to_page.close(code=1001)
            until(page, "document.getElementById('status').textContent.startsWith('Reconnected')")
            assert page.inner_text("#status") == f"Reconnected to your shell as {name} on This host."
            type_line(page, "echo $MARK")
            screen_line(page, "kept-42")

            # The terminal fills the window and the shell follows when the window changes.
            page.set_viewport_size({"width": 700, "height": 500})
            until(page, "term.cols < 80")
            cols, rows = page.evaluate("[term.cols, term.rows]")
            type_line(page, "stty size")
            screen_line(page, f"{rows} {cols}")

            type_line(page, "exit")
            state_is(page, "closed")
            assert page.inner_text("#status") == "Closed: The shell ended (exit status 0)."
            assert page.is_visible("#new-shell")

            # Left alone, a terminal shows a warning before the idle cut, then why it closed.
            page.goto(f"{base}/clusters/{quiet.slug}/terminal/")
            page.wait_for_selector("#warning:not([hidden])")
            assert "closes in 1 s unless you type something" in page.inner_text("#warning")
            state_is(page, "closed")
            assert page.inner_text("#status") == (
                "Closed: Closed after 2 minutes without a keystroke (the idle limit on Quiet host)."
            )
            assert page.is_hidden("#warning")
    finally:
        forget_real_person(name)


# ---- ssm: the Session Manager data channel to the agent emulator ------------------------------------


def on_this_host(run_on_head_node: Callable[..., headnode.Result]) -> Callable[..., headnode.Result]:
    """headnode.run for a cluster whose head node is the emulator: Run Command runs its argv on this host.

    So just-in-time provisioning makes the person's Linux user here, where the emulator's shell runs.
    """

    def run(cluster: Any, argv: Any, **options: Any) -> headnode.Result:
        here = SimpleNamespace(slug=cluster.slug, name=cluster.name, transport="local")
        return run_on_head_node(here, argv, **options)

    return run


def agent_command(command: str, user: str) -> tuple[str, ...]:
    """What the emulated agent runs for the AWS-StartInteractiveCommand `command` (login_command's).

    This host has no sudo, so runuser (util-linux, as the local transport uses) stands in for
    `sudo -n -H -u <user> --`; all after it, the login-shell script, runs exactly as StartSession
    carried it (and Stubber checks that command verbatim).
    """
    argv = shlex.split(command)
    split = argv.index("--") + 1
    assert argv[:split] == ["sudo", "-n", "-H", "-u", user, "--"], argv
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return (runuser, "-u", user, "--", *argv[split:])


@pytest.mark.browser
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_a_person_gets_a_shell_as_themselves_through_session_manager(settings, monkeypatch):
    require_browser()
    cluster = ssm_cluster(instance_id=TARGET, region=REGION)
    person, name = new_real_person(settings)
    grant_terminal(person, cluster)
    monkeypatch.setattr(headnode, "run", on_this_host(headnode.run))
    command = login_command(name)
    cookie = session_cookie(person)
    ARTIFACTS.mkdir(exist_ok=True)

    try:
        with LoopThread() as agent_loop:

            async def start_agent() -> tuple[AgentEmulator, Any, StubbedSsm]:
                agent = await AgentEmulator().__aenter__()
                # The agent checks the upgrade's SigV4 signature and runs the command as the person.
                behaviour = AgentBehaviour(
                    require_sigv4=TEST_CREDENTIALS, command=agent_command(command, name)
                )
                session = agent.new_session(behaviour)
                # Stubber answers StartSession with the emulator's StreamUrl and checks the request exactly.
                stub = StubbedSsm(
                    agent,
                    session,
                    command=command,
                    reason=f"Clusterra terminal of {person.username} as {name}",
                )
                return agent, session, stub

            agent, session, stub = agent_loop.run(start_agent())
            try:
                # The transport factory's Session Manager client: the Stubber'd boto3 client, signing
                # the data channel's upgrade with the credentials the emulator checks.
                monkeypatch.setattr(
                    transports,
                    "ssm_manager",
                    lambda _: SessionManager(stub.client, credentials=TEST_CREDENTIALS),
                )
                with live_daphne.in_this_process() as base, terminal_browser(base, cookie) as page:
                    tap = SocketTap()
                    page.route_web_socket(re.compile(r".*/ws/clusters/.*"), tap)
                    page.goto(f"{base}/clusters/{cluster.slug}/terminal/")
                    page.wait_for_selector(".xterm-screen")
                    state_is(page, "connected")
                    assert page.inner_text("#status") == f"Connected as {name} on AWS cluster."
                    prompt(page)

                    page.locator(".xterm-helper-textarea").focus()
                    type_line(page, "whoami")
                    screen_line(page, name)
                    # Not the agent's working directory: with no directory asked for, the person's home.
                    type_line(page, "pwd")
                    screen_line(page, f"/home/{name}")
                    assert session.sizes[-1] == tuple(page.evaluate("[term.cols, term.rows]"))
                    page.screenshot(path=str(ARTIFACTS / "terminal-ssm.png"))

                    page.click("#end-shell")
                    state_is(page, "closed")
                    assert page.inner_text("#status") == "Closed: You closed the terminal."
                    assert page.is_visible("#new-shell")

                # Closing the terminal terminated the session: the agent killed the shell.
                eventually(lambda: session.terminated, "TerminateSession")
                stub.stubber.assert_no_pending_responses()
                assert session.refused == []
                assert session.protocol_errors == []
            finally:
                agent_loop.run(agent.__aexit__(None, None, None))

        row = TerminalSession.objects.get(person=person)
        assert (row.transport, row.transport_session_id, row.posix_user) == ("ssm", session.session_id, name)
        assert (row.end_reason, row.end_message) == ("closed", "You closed the terminal.")
        assert (row.bytes_in, row.bytes_out) == (tap.to_server, tap.to_page)
        assert row.bytes_in >= len("whoami\r")
        closed = AuditEvent.objects.get(action="terminal.closed")
        assert closed.details["transport_session_id"] == session.session_id
    finally:
        forget_real_person(name)
