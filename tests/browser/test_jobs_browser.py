"""In real Chromium: submit through the form, then watch the job list reach COMPLETED without a reload."""

from __future__ import annotations

import pytest

from tests.support.browser import ARTIFACTS, LAPTOP, SyncLoop, browser_page, require_browser


@pytest.mark.browser
@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_a_job_submitted_in_the_form_reaches_completed_in_the_live_list(live_server, ada):
    require_browser()
    path = ada.script(
        "browser.sh", "#!/bin/bash\n#SBATCH -J ct-browser\n#SBATCH -p debug -t 2\nsleep 2; echo done\n"
    )
    with browser_page(live_server.url, LAPTOP, person=ada.user) as page, SyncLoop():
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
            f'tr[data-job="{job_id}"] .job-state .badge:text-is("COMPLETED")', timeout=40_000
        )
        assert page.evaluate("window.stillThisPage") is True
        page.screenshot(path=str(ARTIFACTS / "jobs-list.png"), full_page=True)

        page.click(f'tr[data-job="{job_id}"] a')
        page.wait_for_selector("#stdout")
        assert page.inner_text("#stdout").strip() == "done"
        page.screenshot(path=str(ARTIFACTS / "jobs-detail.png"), full_page=True)
        page.goto(f"{live_server.url}/")
        page.screenshot(path=str(ARTIFACTS / "jobs-dashboard.png"), full_page=True)
