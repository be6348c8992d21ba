"""Issue 19's "Done when", through the test client on the real Slurm: the editor writes a script as the
person, the submit page submits it, and its output is read back, in the job's page and in the files.
"""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urlencode

import pytest

from jobs.models import JobRecord
from tests.support.jobs_support import sync_until

SCRIPT = (
    "#!/bin/bash\n#SBATCH --job-name=ct-files\n#SBATCH --partition=debug\n#SBATCH --time=2\n"
    'echo "written in the editor, run by $(id -un)"\n'
)


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db
def test_the_editor_writes_a_script_as_the_person_submits_it_and_reads_its_output(client, ada):
    client.force_login(ada.user)
    files = "/clusters/demo/files/"
    home = str(ada.home)

    made = client.post(f"{files}new?{urlencode({'path': home})}", {"name": "hello.sh", "kind": "script"})
    path = f"{home}/hello.sh"
    assert made["Location"] == f"{files}edit?{urlencode({'path': path})}"
    editor = client.get(made["Location"]).content.decode()
    assert "#SBATCH --job-name=hello" in unescape(editor)
    version = re.search(r'name="version" value="(\w+)"', editor).group(1)

    # As a browser sends it: CRLF line breaks, which the file must not keep.
    saved = client.post(
        made["Location"], {"text": SCRIPT.replace("\n", "\r\n"), "version": version, "line_endings": "lf"}
    )
    assert saved.status_code == 302
    written = ada.home / "hello.sh"
    assert written.read_text() == SCRIPT
    assert (written.stat().st_uid, written.stat().st_mode & 0o777) == (ada.uid, 0o755)

    editor = client.get(saved["Location"]).content.decode()
    submit_url = unescape(re.search(r'href="([^"]+)" id="submit-this-file"', editor).group(1))
    assert submit_url == f"/clusters/demo/submit/?{urlencode({'script_path': path})}"
    form = client.get(submit_url).content.decode()
    assert f'value="{path}"' in form  # the submit page starts with the file's path
    key = re.search(r'name="idempotency_key" value="(\w+)"', form).group(1)
    submitted = client.post(
        "/clusters/demo/submit/", {"script_path": path, "action": "submit", "idempotency_key": key}
    )
    assert submitted.status_code == 302
    record = JobRecord.objects.get(person=ada.user)
    assert (record.name, record.posix_user) == ("ct-files", ada.name)

    sync_until(record, {"COMPLETED"})
    said = f"written in the editor, run by {ada.name}"
    assert said in client.get(submitted["Location"]).content.decode()
    # The output is one of the person's files too: listed, and opened in the editor.
    output = f"slurm-{record.slurm_job_id}.out"
    listing = client.get(files).content.decode()
    assert f'<tr data-name="{output}">' in listing
    opened = client.get(f"{files}edit?{urlencode({'path': f'{home}/{output}'})}").content.decode()
    assert said in opened
