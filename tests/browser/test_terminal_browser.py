"""The terminal page in real Chromium on a live uvicorn: sign in, type, the shell answers as the person.

Through both transports: `local` (a PTY on this host) and `ssm` (the Session Manager data channel to the
agent emulator of tests/support/ssm_agent.py, whose PTY runs the login command StartSession carried).
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from django.db import connections

from accounts.models import User
from audit.models import AuditEvent
from clusters import headnode
from terminal import live, transports
from terminal.models import TerminalPolicy, TerminalSession
from terminal.transports.ssm import SessionManager, login_command
from tests.support import live_server
from tests.support.browser import ARTIFACTS, browser_page, require_browser, until
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

# The longest any one step may take, in seconds: page loads, a shell's answer, a close.
STEP = 5.0
# The browser window the terminal opens in; the test shrinks it to a phone and back.
WINDOW = {"width": 1000, "height": 640}
T = TypeVar("T")


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


def terminal_browser(base: str, person: User) -> AbstractContextManager[Any]:
    """A Chromium page signed in at `base` as `person`; every Playwright wait is bounded by STEP."""
    return browser_page(base, WINDOW, person=person, step_ms=STEP * 1000)


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


# ---- pixels: what the terminal really drew ---------------------------------------------------------


def png_brightness(data: bytes) -> list[list[int]]:
    """A PNG screenshot as rows of pixel brightness (the largest of R, G, B), 0 to 255.

    Chromium's screenshots are 8-bit RGB or RGBA, not interlaced: that much of PNG is decoded here.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, compressed = 8, b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
    assert (depth, interlace) == (8, 0), (depth, interlace)
    assert colour in (2, 6), colour
    step = 3 if colour == 2 else 4
    stride = width * step
    raw = zlib.decompress(compressed)
    rows, previous = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            left = line[x - step] if x >= step else 0
            up = previous[x]
            up_left = previous[x - step] if x >= step else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                guess = left + up - up_left
                nearest = min(
                    (abs(guess - left), 0, left), (abs(guess - up), 1, up), (abs(guess - up_left), 2, up_left)
                )
                line[x] = (line[x] + nearest[2]) & 255
        rows.append([max(line[x : x + 3]) for x in range(0, stride, step)])
        previous = line
    return rows


# The box of one character cell on screen: the `column`-th cell of the lowest visible line reading `text`.
CELL_BOX = """([text, column]) => {
  const buffer = term.buffer.active;
  let row = -1;
  for (let i = 0; i < term.rows; i++) {
    const line = buffer.getLine(buffer.viewportY + i);
    if (line && line.translateToString(true).trim() === text) row = i;
  }
  if (row < 0) return null;
  const screen = document.querySelector(".xterm-screen").getBoundingClientRect();
  const line = document.querySelectorAll(".xterm-rows > div")[row].getBoundingClientRect();
  const width = screen.width / term.cols;
  return { x: screen.left + column * width, y: line.top, width: width, height: line.height };
}"""
# Brighter than this (of 255, light text on black) is ink.
INK = 96


def cell_ink(page: Any, text: str, column: int) -> list[int]:
    """The brightest pixel of each pixel row of one character cell, top to bottom, from a screenshot."""
    box = page.evaluate(CELL_BOX, [text, column])
    assert box is not None, f"no line {text!r} on the screen:\n{page.evaluate('termText()')}"
    return [max(row) for row in png_brightness(page.screenshot(clip=box))]


def underscore_drawn(page: Any) -> bool:
    """On the screen line "a_b": is there ink in the "_" cell below the baseline, where the "a" ends?"""
    letter, underscore = cell_ink(page, "a_b", 0), cell_ink(page, "a_b", 1)
    baseline = max(y for y, brightness in enumerate(letter) if brightness > INK)
    return max(underscore[baseline + 1 :], default=0) > INK


def redrawn_with(page: Any, line_height: float) -> None:
    """Set xterm.js's lineHeight and wait until the rows have their new height and are painted."""
    before = page.evaluate("document.querySelector('.xterm-rows > div').getBoundingClientRect().height")
    page.evaluate(f"term.options.lineHeight = {line_height}")
    until(page, f"document.querySelector('.xterm-rows > div').getBoundingClientRect().height !== {before}")
    painted(page)


def painted(page: Any) -> None:
    """Wait until xterm.js has painted what it was given (it draws on animation frames)."""
    page.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def outside_the_browser_loop(call: Callable[[], T]) -> T:
    """Run an ORM call in a thread of its own: Playwright's loop runs in this one, where Django refuses."""

    def run() -> T:
        try:
            return call()
        finally:
            connections.close_all()  # that thread's own connection; PostgreSQL keeps it open otherwise

    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(run).result(STEP)


def colour_of(page: Any, selector: str) -> str:
    return page.evaluate(f"getComputedStyle(document.querySelector({json.dumps(selector)})).color")


def token_colour(page: Any, token: str) -> str:
    """What a colour token of the design system (ui/console.css) computes to."""
    return page.evaluate(
        """token => { const probe = document.createElement("span"); probe.style.color = `var(${token})`;
        document.body.append(probe); const colour = getComputedStyle(probe).color; probe.remove();
        return colour; }""",
        token,
    )


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
def test_a_person_types_in_the_browser_and_the_shell_answers_as_them(settings, monkeypatch, tmp_path):
    require_browser()
    settings.CLUSTERRA_RECORDINGS_DIR = str(tmp_path / "recordings")
    settings.CLUSTERRA_RECORDINGS_S3 = ""
    cluster = local_cluster()
    person, name = new_real_person(settings)
    grant_terminal(person, cluster)
    # Half-second minutes: a 2-minute idle limit is cut after a second.
    monkeypatch.setattr(live, "MINUTE", 0.5)
    quiet = local_cluster("quiet", name="Quiet host", terminal_idle_timeout=2)
    grant_terminal(person, quiet)

    try:
        with live_server.in_this_process() as base, terminal_browser(base, person) as page:
            # Every terminal socket passes through here, so the test can cut one as a network would.
            tap = SocketTap()
            page.route_web_socket(re.compile(r".*/ws/clusters/.*"), tap)
            page.goto(f"{base}/clusters/{cluster.slug}/terminal/")
            page.wait_for_selector(".xterm-screen")
            state_is(page, "connected")
            assert page.inner_text("#status") == f"Connected as {name} on This host."
            assert page.is_visible("#end-shell")
            assert page.is_hidden("#new-shell")
            # This cluster does not record terminals, and the page says nothing of recording.
            assert page.get_by_text("This session is recorded").is_hidden()
            # The cluster's navigation leads back to the dashboard.
            dashboard = page.get_by_role("navigation", name="This host").get_by_role("link", name="Dashboard")
            assert dashboard.is_visible()
            assert dashboard.get_attribute("href").startswith("/#")
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
            page.set_viewport_size({"width": 640, "height": 500})
            until(page, "term.cols < 80")
            cols, rows = page.evaluate("[term.cols, term.rows]")
            type_line(page, "stty size")
            screen_line(page, f"{rows} {cols}")

            # On a phone: the terminal fills the rest of the screen, and the page never scrolls sideways.
            page.set_viewport_size({"width": 390, "height": 844})
            until(page, "term.cols < 50")
            cols, rows = page.evaluate("[term.cols, term.rows]")
            type_line(page, "stty size")
            screen_line(page, f"{rows} {cols}")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            box = page.locator("#terminal").bounding_box()
            assert (box["x"], box["width"]) == (0, 390)
            assert abs(box["y"] + box["height"] - 844) <= 1
            assert box["height"] > 844 / 2
            page.screenshot(path=str(ARTIFACTS / "terminal-phone.png"))
            page.set_viewport_size(WINDOW)

            # Leaving the shell is the normal end of a terminal: said plainly, not in the colour of a failure.
            type_line(page, "exit")
            state_is(page, "ended")
            assert page.inner_text("#status") == "The shell ended. Open a new one when you need it."
            assert page.is_visible("#new-shell")
            assert colour_of(page, "#status") == token_colour(page, "--ink")

            # The cluster starts recording while the page is open: the next shell is recorded, and says so.
            outside_the_browser_loop(lambda: TerminalPolicy.objects.create(cluster=cluster, record=True))
            page.click("#new-shell")
            state_is(page, "connected")
            notice = page.get_by_role("status").filter(has_text="This session is recorded")
            assert notice.is_visible()
            page.click("#end-shell")
            state_is(page, "ended")
            assert page.inner_text("#status") == "Closed: You closed the terminal."

            # Left alone, a terminal shows a warning before the idle cut, then why it closed.
            page.goto(f"{base}/clusters/{quiet.slug}/terminal/")
            page.wait_for_selector("#warning:not([hidden])")
            assert "closes in 1 s unless you type something" in page.inner_text("#warning")
            state_is(page, "closed")
            assert page.inner_text("#status") == (
                "Closed: Closed after 2 minutes without a keystroke (the idle limit on Quiet host)."
            )
            assert colour_of(page, "#status") == token_colour(page, "--bad")
            assert page.is_hidden("#warning")
    finally:
        forget_real_person(name)


@pytest.mark.browser
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_a_recorded_terminal_says_so_and_draws_every_underscore(settings, tmp_path):
    require_browser()
    settings.CLUSTERRA_RECORDINGS_DIR = str(tmp_path / "recordings")
    settings.CLUSTERRA_RECORDINGS_S3 = ""
    cluster = local_cluster()
    TerminalPolicy.objects.create(cluster=cluster, record=True)
    person, name = new_real_person(settings)
    grant_terminal(person, cluster)

    try:
        with live_server.in_this_process() as base, terminal_browser(base, person) as page:
            page.goto(f"{base}/clusters/{cluster.slug}/terminal/")
            # Drawn with the page, before the shell opens: nobody types into a recorded terminal unaware.
            notice = page.get_by_role("status").filter(has_text="This session is recorded")
            assert notice.is_visible()
            state_is(page, "connected")
            assert notice.is_visible()
            prompt(page)

            page.locator(".xterm-helper-textarea").focus()
            type_line(page, "echo a_b")
            screen_line(page, "a_b")
            painted(page)
            page.screenshot(path=str(ARTIFACTS / "terminal-underscore.png"))
            # The page's settings draw the underscore inside its cell (xterm.js #4067).
            assert underscore_drawn(page), cell_ink(page, "a_b", 1)

            # The control: xterm.js's default line height clips it away at this size, so the same check fails
            # there; it can tell a drawn underscore from a missing one.
            settled = page.evaluate("term.options.lineHeight")
            redrawn_with(page, 1)
            assert not underscore_drawn(page), cell_ink(page, "a_b", 1)
            redrawn_with(page, settled)
            assert underscore_drawn(page)

            page.click("#end-shell")
            state_is(page, "ended")
        row = TerminalSession.objects.get(person=person)
        assert row.recording
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
                with live_server.in_this_process() as base, terminal_browser(base, person) as page:
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
                    state_is(page, "ended")
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
