"""In real Chromium: a job template filled in, previewed with its decision and cost, saved and submitted."""

from __future__ import annotations

import re

import pytest

from job_templates.models import JobTemplate, TemplateField
from jobs.models import JobRecord
from tests.support.browser import ARTIFACTS, LAPTOP, SyncLoop, browser_page, require_browser

BODY = """#!/bin/bash
#SBATCH --job-name=ct-browser-template
#SBATCH --partition={{ partition }} --time={{ minutes }}
GREETING={{ greeting }}
sleep 1
echo "$GREETING from the template"
"""


def make_template(cluster) -> JobTemplate:
    template = JobTemplate.objects.create(
        name="Greet", slug="greet", cluster=cluster, body=BODY, description="Prints a greeting."
    )
    TemplateField.objects.create(
        template=template, name="partition", label="Partition", kind="partition", default="debug", locked=True
    )
    TemplateField.objects.create(
        template=template,
        name="minutes",
        label="Time limit",
        kind="time_limit",
        default="2",
        maximum=10,
        order=1,
    )
    TemplateField.objects.create(
        template=template, name="greeting", label="Greeting", kind="text", default="hello", order=2
    )
    return template


@pytest.mark.browser
@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_a_template_is_filled_previewed_and_submitted_in_the_browser(live_server, ada, demo_cluster):
    require_browser()
    make_template(demo_cluster)
    with browser_page(live_server.url, LAPTOP, person=ada.user) as page, SyncLoop():
        page.goto(f"{live_server.url}/clusters/demo/templates/")
        page.screenshot(path=str(ARTIFACTS / "templates-list.png"), full_page=True)
        page.click("text=Fill in Greet")
        page.wait_for_url("**/clusters/demo/templates/greet/")

        # The locked field is shown with its value, and cannot be changed.
        assert page.is_disabled("#id_partition")
        assert page.input_value("#id_partition") == "debug"
        page.fill("#id_minutes", "3")
        page.fill("#id_greeting", "Good morning, Ada")
        page.click("button[value=preview]")
        page.wait_for_selector("#preview")
        preview = page.inner_text("#preview")
        assert "This job may run on partition debug of Demo cluster" in preview
        assert "Submitting reserves 0.05 CPU-hours" in preview
        assert "GREETING='Good morning, Ada'" in page.inner_text("#script")
        assert "#SBATCH --partition=debug --time=3" in page.inner_text("#script")
        page.screenshot(path=str(ARTIFACTS / "templates-preview.png"), full_page=True)

        # On a phone the preview fits the screen: the script scrolls inside its own box.
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(ARTIFACTS / "templates-preview-phone.png"), full_page=True)
        page.set_viewport_size(LAPTOP)

        page.click("button[value=submit]")
        page.wait_for_url("**/clusters/demo/jobs/*/")
        job_id = page.url.rstrip("/").rsplit("/", 1)[1]
        assert re.search(r"Saved /home/\S+/clusterra-jobs/greet-\d{8}-\d{6}\.sh", page.inner_text("main"))
        saved = ada.home / "clusterra-jobs"
        [path] = saved.iterdir()
        assert path.stat().st_uid == ada.uid
        assert "GREETING='Good morning, Ada'" in path.read_text()

        # The job runs: its page shows the output once the sync loop has seen it finish.
        for _ in range(40):
            page.reload()
            if "COMPLETED" in page.inner_text("main"):
                break
            page.wait_for_timeout(1000)
        page.wait_for_selector("#stdout")
        assert page.inner_text("#stdout").strip() == "Good morning, Ada from the template"
        page.screenshot(path=str(ARTIFACTS / "templates-job.png"), full_page=True)
    # The database is read after the browser is gone: Playwright's sync API runs an event loop meanwhile.
    record = JobRecord.objects.get(person=ada.user)
    assert (str(record.slurm_job_id), record.script_path) == (job_id, str(path))
    assert record.state == "COMPLETED"
