"""A terminal page away for long (a laptop asleep, a network gone) comes back to its shell in real Chromium.

The shell is held by the shell keeper (`manage.py keep_shells`), the page served by uvicorn in this process.
The page's clock is Playwright's, so ten minutes of failing reconnects take a moment.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.conftest import require
from tests.support import live_server
from tests.support.browser import browser_page, require_browser
from tests.support.keeper_support import Keeper
from tests.support.terminal_support import forget_real_person, grant_terminal, local_cluster, new_real_person

STEP = 5.0


def until(page, expression: str, timeout: float = STEP):
    # Polled from here: the console's Content-Security-Policy refuses Playwright's eval-based waits.
    deadline = time.monotonic() + timeout
    while not (value := page.evaluate(expression)):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not true within {timeout} s: {expression}; status {page.inner_text('#status')!r}"
            )
        page.wait_for_timeout(50)
    return value


def state(page) -> str:
    return page.evaluate("document.getElementById('status').dataset.state")


@pytest.mark.browser
@pytest.mark.root
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_page_away_for_long_comes_back_to_its_shell(settings, tmp_path):
    require_browser()
    require(bool(os.environ.get("REDIS_URL")), "the shell keeper needs REDIS_URL")
    directory = tmp_path / "shells"
    directory.mkdir(mode=0o700)
    settings.CLUSTERRA_SHELL_KEEPER = str(directory / "keeper.sock")
    cluster = local_cluster()
    person, name = new_real_person(settings)
    grant_terminal(person, cluster)
    keeper = Keeper(directory / "keeper.sock").start()
    network = {"up": True, "tries": 0}
    sockets = []

    def route(to_page) -> None:
        if not network["up"]:
            network["tries"] += 1
            to_page.close(code=1001)  # what the page sees of a network that is not there
            return
        sockets.append((to_page, to_page.connect_to_server()))

    try:
        with (
            live_server.in_this_process() as base,
            browser_page(base, {"width": 900, "height": 600}, person=person) as page,
        ):
            page.context.set_default_timeout(STEP * 1000)
            page.clock.install()
            page.route_web_socket(re.compile(r".*/ws/clusters/.*"), route)
            page.goto(f"{base}/clusters/{cluster.slug}/terminal/")
            until(page, "document.getElementById('status').dataset.state === 'connected'")
            until(page, "/\\$ *$/.test(termText())")
            page.locator(".xterm-helper-textarea").focus()
            page.keyboard.type("export MARK=slept-$((6*7))")
            page.keyboard.press("Enter")

            # The lid closes: the socket dies, and reconnect after reconnect finds no network (the page's
            # clock runs minutes ahead in moments).
            network["up"] = False
            to_page, to_server = sockets[-1]
            to_server.close(code=1001)
            to_page.close(code=1001)
            deadline = time.monotonic() + 60
            while network["tries"] < 12:
                assert time.monotonic() < deadline, network
                page.clock.run_for(5_000)
                page.wait_for_timeout(10)
            # Still trying, the resume token kept: not "closed" after the first few tries.
            assert state(page) == "reconnecting", page.inner_text("#status")
            assert page.is_hidden("#new-shell")

            # It wakes and the tab is looked at: the page goes back at once, to the same shell.
            network["up"] = True
            page.evaluate("window.dispatchEvent(new Event('focus'))")
            until(page, "document.getElementById('status').textContent.startsWith('Reconnected')")
            assert page.inner_text("#status") == f"Reconnected to your shell as {name} on This host."
            page.keyboard.type("echo $MARK")
            page.keyboard.press("Enter")
            until(page, "termText().split('\\n').some(l => l.trim() === 'slept-42')")
    finally:
        keeper.stop()
        forget_real_person(name)
