"""In real Chromium: write a job script in the file editor, submit it from there, read its output."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest

from tests.support.browser import ARTIFACTS, LAPTOP, SyncLoop, browser_page, require_browser

SCRIPT = (
    "#!/bin/bash\n#SBATCH --job-name=ct-editor\n#SBATCH --partition=debug\n#SBATCH --time=2\n"
    'echo "from the browser editor as $(id -un)"\n'
)


@pytest.mark.browser
@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_a_script_written_in_the_editor_is_submitted_and_its_output_read(live_server, ada):
    require_browser()
    path = f"{ada.home}/editor.sh"
    said = f"from the browser editor as {ada.name}"
    with browser_page(live_server.url, LAPTOP, person=ada.user) as page, SyncLoop():
        page.goto(f"{live_server.url}/clusters/demo/files/")
        page.click("text=New file or folder")
        page.fill("#id_name", "editor.sh")
        assert page.is_checked("input[name=kind][value=script]")
        page.click("button:text('Make it')")
        page.wait_for_url("**/files/edit?*")
        assert page.input_value("#id_text").startswith("#!/bin/bash\n#SBATCH --job-name=editor\n")

        page.fill("#id_text", SCRIPT)
        page.click("button:text-is('Save')")
        page.wait_for_selector(f"text=Saved {path}.")
        # Chromium sent the text with CRLF line breaks; the script on the cluster has none.
        written = ada.home / "editor.sh"
        assert written.read_text() == SCRIPT
        assert (written.stat().st_uid, written.stat().st_mode & 0o777) == (ada.uid, 0o755)
        page.screenshot(path=str(ARTIFACTS / "files-editor.png"), full_page=True)

        page.click("#submit-this-file")
        page.wait_for_url(f"**/clusters/demo/submit/?{urlencode({'script_path': path})}")
        assert page.input_value("#id_script_path") == path
        page.click("button[value=submit]")
        page.wait_for_url("**/clusters/demo/jobs/*/")
        job_id = page.url.rstrip("/").rsplit("/", 1)[1]

        # The job's own page, reloaded as a person would until the sync loop has seen it end.
        deadline = time.monotonic() + 40
        while page.inner_text("p.job-state").split()[0] != "COMPLETED":
            assert time.monotonic() < deadline, page.inner_text("p.job-state")
            time.sleep(0.5)
            page.reload()
        assert page.inner_text("#stdout").strip() == said

        # The output is a file of the person's: found in the listing and opened in the editor.
        page.goto(f"{live_server.url}/clusters/demo/files/")
        page.click(f'tr[data-name="slurm-{job_id}.out"] a:text-is("slurm-{job_id}.out")')
        page.wait_for_url("**/files/edit?*")
        assert page.input_value("#id_text").strip() == said
        editor_url = page.url
        page.goto(f"{live_server.url}/clusters/demo/files/")
        page.screenshot(path=str(ARTIFACTS / "files-browse.png"), full_page=True)

        # On a phone neither page scrolls sideways: the table folds, the text area scrolls inside.
        page.set_viewport_size({"width": 390, "height": 844})
        for url in (page.url, editor_url):
            page.goto(url)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, url
        page.screenshot(path=str(ARTIFACTS / "files-editor-phone.png"), full_page=True)
