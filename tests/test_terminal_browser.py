"""The terminal page in real Chromium on a live daphne: sign in, type, the shell answers as the person."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from asgiref.sync import SyncToAsync
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.db import connections
from django.test import Client

from terminal import live
from tests.conftest import REPO, require
from tests.terminal_support import forget_real_person, grant_terminal, local_cluster, new_real_person

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
_fork_fix_registered = False


def _fresh_single_thread_executor() -> None:
    # A forked child copies asgiref's one-thread executor but not its thread: calls queued on it would
    # wait forever (a WebSocket that never opens). The child gets an executor of its own.
    SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)


@contextmanager
def live_server(django_db_blocker) -> Iterator[str]:
    """daphne serving the real ASGI app (and static files) in a forked process, on a free loopback port.

    Forked after the test's rows are committed, so the child sees them (with SQLite's in-memory test
    database, in its copy of this process's memory).
    """
    from channels.testing.live import make_application
    from daphne.testing import DaphneProcess

    global _fork_fix_registered
    if not _fork_fix_registered:
        os.register_at_fork(after_in_child=_fresh_single_thread_executor)
        _fork_fix_registered = True
    connections.close_all()
    server = DaphneProcess("127.0.0.1", partial(make_application, static_wrapper=ASGIStaticFilesHandler))
    with django_db_blocker.unblock():
        server.start()
    try:
        if not server.ready.wait(30):
            raise RuntimeError("daphne did not start within 30 s")
        yield f"http://127.0.0.1:{server.port.value}"
    finally:
        server.terminate()
        server.join(10)


@pytest.mark.browser
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_a_person_types_in_the_browser_and_the_shell_answers_as_them(
    settings, django_db_blocker, monkeypatch
):
    require(CHROMIUM.exists(), "Chromium is missing: apt-get install chromium (never `playwright install`)")
    require(importlib.util.find_spec("playwright") is not None, "the playwright package is not installed")
    from playwright.sync_api import sync_playwright

    cluster = local_cluster()
    person, name = new_real_person(settings)
    grant_terminal(person, cluster)
    # Half-second minutes (inherited by the forked server): a 2-minute idle limit is cut after a second.
    monkeypatch.setattr(live, "MINUTE", 0.5)
    quiet = local_cluster("quiet", name="Quiet host", terminal_idle_timeout=2)
    grant_terminal(person, quiet)
    client = Client()
    client.force_login(person)
    cookie = client.cookies["sessionid"].value
    ARTIFACTS.mkdir(exist_ok=True)

    try:
        with live_server(django_db_blocker) as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1000, "height": 640})
                context.add_cookies([{"name": "sessionid", "value": cookie, "url": base}])
                page = context.new_page()
                # Every terminal socket passes through here, so the test can cut one as a network would.
                sockets = []
                page.route_web_socket(
                    re.compile(r".*/ws/clusters/.*"), lambda ws: sockets.append((ws, ws.connect_to_server()))
                )
                page.goto(f"{base}/clusters/{cluster.slug}/terminal/")
                page.wait_for_selector(".xterm-screen")
                page.wait_for_function("document.getElementById('status').dataset.state === 'connected'")
                assert page.inner_text("#status") == f"Connected as {name} on This host."
                page.wait_for_function("/\\$ *$/.test(termText())")

                page.locator(".xterm-helper-textarea").focus()
                page.keyboard.type("echo hello-from-browser")
                page.keyboard.press("Enter")
                page.wait_for_function("termText().split('\\n').some(l => l.trim() === 'hello-from-browser')")
                page.keyboard.type("whoami")
                page.keyboard.press("Enter")
                page.wait_for_function(f"termText().split('\\n').some(l => l.trim() === '{name}')")
                page.screenshot(path=str(ARTIFACTS / "terminal.png"))

                # The connection drops; the page reconnects by itself and gets the same shell back.
                page.keyboard.type("export MARK=kept-$((6*7))")
                page.keyboard.press("Enter")
                to_page, to_server = sockets[-1]
                to_server.close(code=1001)
                to_page.close(code=1001)
                page.wait_for_function(
                    "document.getElementById('status').textContent.startsWith('Reconnected')"
                )
                assert page.inner_text("#status") == f"Reconnected to your shell as {name} on This host."
                page.keyboard.type("echo $MARK")
                page.keyboard.press("Enter")
                page.wait_for_function("termText().split('\\n').some(l => l.trim() === 'kept-42')")

                # The terminal fills the window and the shell follows when the window changes.
                page.set_viewport_size({"width": 700, "height": 500})
                page.wait_for_function("term.cols < 80")
                cols, rows = page.evaluate("[term.cols, term.rows]")
                page.keyboard.type("stty size")
                page.keyboard.press("Enter")
                page.wait_for_function(f"termText().split('\\n').some(l => l.trim() === '{rows} {cols}')")

                page.keyboard.type("exit")
                page.keyboard.press("Enter")
                page.wait_for_function("document.getElementById('status').dataset.state === 'closed'")
                assert page.inner_text("#status") == "Closed: The shell ended (exit status 0)."
                assert page.is_visible("#new-shell")

                # Left alone, a terminal shows a warning before the idle cut, then why it closed.
                page.goto(f"{base}/clusters/{quiet.slug}/terminal/")
                page.wait_for_selector("#warning:not([hidden])")
                assert "closes in 1 s unless you type something" in page.inner_text("#warning")
                page.wait_for_function("document.getElementById('status').dataset.state === 'closed'")
                assert page.inner_text("#status") == (
                    "Closed: Closed after 2 minutes without a keystroke (the idle limit on Quiet host)."
                )
                assert page.is_hidden("#warning")
            finally:
                browser.close()
    finally:
        forget_real_person(name)
