"""Debian's Chromium driven by Playwright: what every browser test sets up before its own steps.

Django and Playwright are imported inside the functions that need them, so importing this module
costs nothing to a test that collects with `-p no:django` or runs where Playwright is missing.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import REPO, require

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and quiet: no update checks or sync traffic from the browser while a test measures the page.
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
# Screenshots and findings CI keeps after the run.
ARTIFACTS = REPO / "test-artifacts"
# The window most page tests take their screenshots in.
LAPTOP = {"width": 1200, "height": 800}


def require_browser() -> None:
    """Skip (laptop) or fail (CI) a test without Chromium or the playwright package."""
    require(CHROMIUM.exists(), "Chromium is missing: apt-get install chromium (never `playwright install`)")
    require(importlib.util.find_spec("playwright") is not None, "the playwright package is not installed")


def chromium(playwright: Any) -> Any:
    """Debian's Chromium, launched through `playwright` (Playwright's own browser download is never used)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def session_cookie(person: Any) -> str:
    """The value of a `sessionid` cookie signed in as the Django user `person`."""
    from django.test import Client

    client = Client()
    client.force_login(person)
    return client.cookies["sessionid"].value


@contextmanager
def browser_page(
    base: str,
    viewport: dict[str, int],
    *,
    person: Any = None,
    step_ms: float | None = None,
    ignore_https_errors: bool = False,
) -> Iterator[Any]:
    """A Chromium page at `viewport`, signed in to the console at `base` as `person` when one is given.

    The session is made before Playwright starts: its sync API runs an event loop in this thread, where
    Django refuses database calls. `step_ms` bounds every Playwright wait of the page. Screenshots go
    into ARTIFACTS, which exists once the page does. `ignore_https_errors`: for a console behind nginx
    with the test's own self-signed certificate.
    """
    from playwright.sync_api import sync_playwright

    cookie = session_cookie(person) if person is not None else None
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = chromium(playwright)
        try:
            context = browser.new_context(viewport=viewport, ignore_https_errors=ignore_https_errors)
            if step_ms is not None:
                context.set_default_timeout(step_ms)
            if cookie is not None:
                context.add_cookies([{"name": "sessionid", "value": cookie, "url": base}])
            yield context.new_page()
        finally:
            browser.close()


def until(page: Any, expression: str, timeout: float = 5.0) -> Any:
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


class SyncLoop(threading.Thread):
    """The sync loop beside the live server, as `manage.py sync_jobs` would run in production.

    A context manager: it polls every half second from entering until leaving.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from jobs import sync

        try:
            while not self.stopping.wait(0.5):
                sync.sync_once()
        finally:
            connection.close()

    def __enter__(self) -> SyncLoop:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.join(10)
