"""The newcomer's path in real Chromium: demo signup, dashboard, a shell, sbatch, the job list, its output."""

from __future__ import annotations

import email
import io
import os
import pwd
import re
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from clusters.models import Cluster
from tests.conftest import require
from tests.support import live_server
from tests.support.browser import ARTIFACTS, browser_page, require_browser
from tests.support.demo_support import LINK
from tests.support.fake_headnode import ct_email, free_uid_block, remove_linux_user

# The README's picture is taken at this size, so it stays the same from one run to the next.
VIEWPORT = {"width": 1280, "height": 800}
# Playwright's own default is 30 s a step; no step of this path should take a third of that.
STEP_MS = 10_000
# From sbatch to COMPLETED in the list: Slurm runs the job in a second, the loop polls every half
# second and the page every 3 s; about 4 s in all.
JOB_MS = 20_000
SYNC_EVERY = 0.5
UID_BLOCK = 20


def _sync_loop() -> None:
    """`manage.py sync_jobs` as `make demo` runs it beside the web server, in a thread of the server.

    In the server's process and not the test's: with SQLite's in-memory test database the
    forked server works on its own copy, and only a loop in there sees the person it made.
    """
    from jobs import sync

    while True:
        try:
            report = sync.sync_once()
            for error in report.errors:
                print(f"sync loop: {error}", file=sys.stderr)
        except Exception:
            # A round that fails (a table lock on SQLite, slurmrestd restarting) is retried, as in production.
            traceback.print_exc()
        finally:
            connection.close()
        time.sleep(SYNC_EVERY)


def _start_sync_loop() -> None:
    threading.Thread(target=_sync_loop, name="sync loop", daemon=True).start()


def mailed_link(outbox: Path, to: str) -> str:
    """The sign-in link in the one mail the server wrote (the file backend: one file per connection)."""
    files = sorted(outbox.glob("*.log"))
    assert len(files) == 1, f"expected one mail in {outbox}, found {[f.name for f in files]}"
    # The file backend closes each message with a line of 79 dashes.
    raw = files[0].read_bytes().split(b"\n" + b"-" * 79 + b"\n")[0]
    message = email.message_from_bytes(raw)
    assert message["To"] == to
    body = message.get_payload(decode=True).decode(message.get_content_charset() or "utf-8")
    found = LINK.search(body)
    assert found, body
    return found.group(0)


def term_line(page: Any, pattern: str, timeout: float = STEP_MS / 1000) -> re.Match[str]:
    """The first line of the terminal's screen that matches `pattern`, waiting for it at most `timeout` s.

    Polled from here, not with wait_for_function: Playwright evaluates that predicate inside the page,
    which the console's Content-Security-Policy (no eval) rightly refuses.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = page.evaluate("termText()")
        found = next((m for line in text.splitlines() if (m := re.search(pattern, line))), None)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no line matching {pattern!r} within {timeout} s; the screen:\n{text}")
        page.wait_for_timeout(100)


def type_line(page: Any, line: str) -> None:
    page.keyboard.type(line)
    page.keyboard.press("Enter")


def shot(page: Any, name: str, *, full_page: bool = False) -> None:
    """A screenshot of this step in test-artifacts/; the window as a person sees it unless `full_page`."""
    page.screenshot(path=str(ARTIFACTS / f"demo-{name}.png"), full_page=full_page)


def remove_users_in(start: int) -> None:
    """Every Linux user the test's UID block holds: provisioning may have made one before a failure."""
    for entry in pwd.getpwall():
        if start <= entry.pw_uid < start + UID_BLOCK and entry.pw_name.startswith("ct"):
            remove_linux_user(entry.pw_name)


@pytest.mark.browser
@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_a_newcomer_signs_up_runs_a_job_in_the_terminal_and_reads_its_output(
    demo_settings, demo_cluster, django_db_blocker, tmp_path
):
    require_browser()
    require(os.geteuid() == 0, "needs root: the demo makes a Linux user and starts their shell")
    require(bool(shutil.which("runuser") and shutil.which("setsid")), "needs runuser and setsid (util-linux)")
    require(bool(shutil.which("sbatch") and shutil.which("sinfo")), "the Slurm client commands are missing")
    from playwright.sync_api import expect

    # The demo as `make demo` sets it up: the local cluster with local terminals, seeded.
    Cluster.objects.filter(pk=demo_cluster.pk).update(transport=Cluster.Transport.LOCAL)
    call_command("seed_demo", cluster="demo", stdout=io.StringIO())
    start = free_uid_block(UID_BLOCK)
    demo_settings.CLUSTERRA_UID_MIN, demo_settings.CLUSTERRA_UID_MAX = start, start + UID_BLOCK - 1
    # The server runs in another process: its mail goes to files the test can read.
    outbox = tmp_path / "mail"
    demo_settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    demo_settings.EMAIL_FILE_PATH = str(outbox)
    address = ct_email()

    try:
        with (
            live_server.forked(django_db_blocker, setup=_start_sync_loop) as base,
            browser_page(base, VIEWPORT, step_ms=STEP_MS) as page,
        ):
            # Sign up: an address, then the link from the mail, then one button.
            page.goto(f"{base}/demo/")
            assert page.inner_text("h1") == "Try Clusterra on a real Slurm cluster"
            page.fill("input[name=email]", address)
            shot(page, "1-signup")
            page.click("button:has-text('Mail me a sign-in link')")
            page.wait_for_url(f"{base}/demo/sent/")
            assert address in page.inner_text("main")
            shot(page, "2-check-your-mail")

            page.goto(mailed_link(outbox, address))
            assert page.inner_text("h1") == "Join the demo"
            shot(page, "3-confirm")
            page.click("button:has-text('Join the demo')")
            page.wait_for_url(f"{base}/")

            # The dashboard: the demo cluster, its debug partition, the person's quota as gauges.
            assert "Welcome to the demo" in page.inner_text(".messages")
            panel = page.locator("#cluster-demo")
            assert panel.locator("h2").inner_text().startswith("Demo cluster")
            assert "Not answering" not in panel.inner_text()
            assert panel.locator("table.partitions tr", has_text="debug").is_visible()
            labels = panel.locator(".quota .gauge .label").all_inner_texts()
            assert {"CPU-hours", "Running jobs"} <= set(labels), labels
            assert panel.locator(".quota .gauge").first.is_visible()
            shot(page, "4-dashboard", full_page=True)  # the quota gauges sit below the fold

            # The terminal: a shell as the new POSIX user, made on the way in.
            panel.locator("a", has_text="Terminal").click()
            page.wait_for_url(f"{base}/clusters/demo/terminal/")
            page.wait_for_selector(".xterm-screen")
            page.wait_for_selector("#status[data-state=connected]")
            status = page.inner_text("#status")
            connected = re.fullmatch(r"Connected as (\S+) on Demo cluster\.", status)
            assert connected, status
            name = connected.group(1)
            assert name == address.split("@")[0]
            term_line(page, r"\$ *$")
            page.locator(".xterm-helper-textarea").focus()

            type_line(page, "sinfo")
            term_line(page, r"^debug\*? +up ")
            shot(page, "5-sinfo")

            # printf rather than a heredoc: the shell's history expansion would take `#!` in one.
            type_line(
                page,
                "printf '%s\\n' '#!/bin/bash' '#SBATCH --partition=debug' '#SBATCH --time=1' "
                "'echo hello from $(whoami)' > hello.sh",
            )
            type_line(page, "sbatch hello.sh")
            job_id = term_line(page, r"^Submitted batch job (\d+)$").group(1)
            shot(page, "6-sbatch")

            # The job list, fed by the sync loop: the row appears and reaches COMPLETED in place.
            page.click("a.brand")
            page.wait_for_url(f"{base}/")
            page.locator("#cluster-demo a", has_text="Your jobs").click()
            page.wait_for_url(f"{base}/clusters/demo/jobs/")
            page.evaluate("window.stillThisPage = true")
            row = f'tr[data-job="{job_id}"]'
            expect(page.locator(f"{row} .job-state")).to_have_text("COMPLETED", timeout=JOB_MS)
            assert page.evaluate("window.stillThisPage") is True
            assert page.locator(row).locator("td").nth(2).inner_text() == "debug"
            shot(page, "7-job-list")

            # The job page: its output, read as the person.
            page.click(f"{row} a")
            page.wait_for_url(f"{base}/clusters/demo/jobs/{job_id}/")
            assert page.inner_text("#stdout").strip() == f"hello from {name}"
            assert "outside the console" in page.inner_text("dl.facts")
            shot(page, "8-job-output")
    finally:
        remove_users_in(start)
