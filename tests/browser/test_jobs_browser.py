"""In real Chromium: submit through the form, then watch the job list reach COMPLETED without a reload."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from jobs import sync
from tests.conftest import REPO, require

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
ARTIFACTS = REPO / "test-artifacts"


class SyncLoop(threading.Thread):
    """The sync loop beside the live server, as `manage.py sync_jobs` would run in production."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.wait(0.5):
                sync.sync_once()
        finally:
            connection.close()


@pytest.mark.browser
@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_a_job_submitted_in_the_form_reaches_completed_in_the_live_list(live_server, ada):
    require(CHROMIUM.exists(), "Chromium is missing: apt-get install chromium (never `playwright install`)")
    require(importlib.util.find_spec("playwright") is not None, "the playwright package is not installed")
    from playwright.sync_api import sync_playwright

    path = ada.script(
        "browser.sh", "#!/bin/bash\n#SBATCH -J ct-browser\n#SBATCH -p debug -t 2\nsleep 2; echo done\n"
    )
    client = Client()
    client.force_login(ada.user)
    cookie = client.cookies["sessionid"].value
    ARTIFACTS.mkdir(exist_ok=True)
    loop = SyncLoop()
    loop.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1200, "height": 800})
                context.add_cookies([{"name": "sessionid", "value": cookie, "url": live_server.url}])
                page = context.new_page()
                page.goto(f"{live_server.url}/clusters/demo/submit/")
                page.fill("#id_script_path", path)
                page.click("button[value=preview]")
                page.wait_for_selector("#preview")
                assert "This job may run on partition debug of Demo cluster" in page.inner_text("#preview")
                assert "ct-browser" in page.inner_text("#preview")
                page.screenshot(path=str(ARTIFACTS / "jobs-preview.png"), full_page=True)

                page.click("button[value=submit]")
                page.wait_for_url("**/clusters/demo/jobs/*/")
                job_id = page.url.rstrip("/").rsplit("/", 1)[1]
                page.goto(f"{live_server.url}/clusters/demo/jobs/")
                page.wait_for_selector(f'tr[data-job="{job_id}"]')
                # A reload would forget this: the row must change in place.
                page.evaluate("window.stillThisPage = true")
                # A selector, not wait_for_function: Playwright evaluates that predicate with eval in
                # the page, which the Content-Security-Policy (no 'unsafe-eval') refuses.
                page.wait_for_selector(
                    f'tr[data-job="{job_id}"] .job-state:text-is("COMPLETED")', timeout=40_000
                )
                assert page.evaluate("window.stillThisPage") is True
                page.screenshot(path=str(ARTIFACTS / "jobs-list.png"), full_page=True)

                page.click(f'tr[data-job="{job_id}"] a')
                page.wait_for_selector("#stdout")
                assert page.inner_text("#stdout").strip() == "done"
                page.screenshot(path=str(ARTIFACTS / "jobs-detail.png"), full_page=True)
                page.goto(f"{live_server.url}/")
                page.screenshot(path=str(ARTIFACTS / "jobs-dashboard.png"), full_page=True)
            finally:
                browser.close()
    finally:
        loop.stopping.set()
        loop.join(10)
