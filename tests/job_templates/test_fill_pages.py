"""A person's templates: who sees which, locked fields, injection attempts, and a template filled, previewed,
saved into their home as them and submitted to the real Slurm."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.utils.html import escape

from access.models import Grant
from accounts.models import User
from audit.models import AuditEvent
from clusters.models import Cluster
from job_templates.models import JobTemplate, TemplateField
from jobs.models import JobRecord
from tests.support import slurm_commands
from tests.support.jobs_support import SlurmWatch, sync_until

pytestmark = pytest.mark.django_db

BODY = """#!/bin/bash
#SBATCH --job-name=ct-template
#SBATCH --partition={{ partition }}
#SBATCH --time={{ minutes }}
#SBATCH --cpus-per-task={{ cpus }}
GREETING={{ greeting }}
echo "$GREETING from $(id -un)"
"""


def make_template(cluster: Cluster | None = None, *, slug: str = "hello", body: str = BODY) -> JobTemplate:
    template = JobTemplate.objects.create(name=f"Say {slug}", slug=slug, cluster=cluster, body=body)
    for order, (name, label, kind, default, extra) in enumerate(
        [
            ("partition", "Partition", "partition", "debug", {"locked": True}),
            ("minutes", "Time limit", "time_limit", "3", {"maximum": 10}),
            ("cpus", "CPUs", "integer", "2", {"minimum": 1, "maximum": 4}),
            ("greeting", "Greeting", "text", "hello world", {}),
        ]
    ):
        if f"{{{{ {name} }}}}" in body:
            TemplateField.objects.create(
                template=template, name=name, label=label, kind=kind, default=default, order=order, **extra
            )
    return template


def scontrol(job_id: int) -> dict[str, str]:
    out = subprocess.run(
        [slurm_commands.command("scontrol"), "-o", "show", "job", str(job_id)], capture_output=True, text=True
    ).stdout
    return dict(word.split("=", 1) for word in out.split() if "=" in word)


def batch_script(job_id: int) -> str:
    """The script Slurm holds for the job, as root reads it back."""
    return subprocess.run(
        [slurm_commands.command("scontrol"), "write", "batch_script", str(job_id), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def form_key(client, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200
    return re.search(r'name="idempotency_key" value="(\w+)"', page.content.decode()).group(1)


def digest_of(html: str) -> str:
    return re.search(r'name="previewed" value="(\w+)"', html).group(1)


# --- who sees which template (no Slurm needed) ------------------------------------------------------


@pytest.fixture
def offline(db, tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"k" * 32)
    return Cluster.objects.create(
        slug="off", name="Offline", slurmrestd_url="http://127.0.0.1:9", jwt_key_ref=str(key)
    )


@pytest.fixture
def lin(offline):
    person = User.objects.create_user("lin", "lin@example.org", "pw-lin-123456")
    Grant.objects.create(cluster=offline, user=person, all_partitions=True)
    return person


TEXT_ONLY = "#!/bin/bash\necho {{ greeting }}\n"


def test_groups_decide_who_sees_a_template_and_empty_means_everyone(client, offline, lin):
    everyone = make_template(offline, slug="everyone", body=TEXT_ONLY)
    everywhere = make_template(None, slug="everywhere", body=TEXT_ONLY)
    ml_only = make_template(offline, slug="ml-only", body=TEXT_ONLY)
    ml = Group.objects.create(name="ml-team")
    ml_only.groups.add(ml)
    elsewhere = Cluster.objects.create(slug="else", name="Elsewhere", slurmrestd_url="http://127.0.0.1:9")
    make_template(elsewhere, slug="elsewhere", body=TEXT_ONLY)
    switched_off = make_template(offline, slug="switched-off", body=TEXT_ONLY)
    switched_off.enabled = False
    switched_off.save()
    client.force_login(lin)

    html = client.get("/clusters/off/templates/").content.decode()
    shown = re.findall(r'<section class="card" id="template-([\w-]+)">', html)
    assert shown == [everyone.slug, everywhere.slug]
    assert client.get("/clusters/off/templates/ml-only/").status_code == 404
    assert client.get("/clusters/off/templates/elsewhere/").status_code == 404
    assert client.get("/clusters/off/templates/switched-off/").status_code == 404

    lin.groups.add(ml)
    html = client.get("/clusters/off/templates/").content.decode()
    assert re.findall(r'id="template-([\w-]+)"', html) == ["everyone", "everywhere", "ml-only"]
    page = client.get("/clusters/off/templates/ml-only/")
    assert page.status_code == 200
    assert 'value="hello world"' in page.content.decode()


def test_no_templates_says_what_to_do_next(client, offline, lin):
    client.force_login(lin)
    html = client.get("/clusters/off/templates/").content.decode()
    assert "No job templates for you on Offline yet." in html
    assert 'href="/clusters/off/submit/"' in html


def test_someone_not_allowed_on_the_cluster_gets_the_policys_sentence(client, offline):
    make_template(offline, body=TEXT_ONLY)
    stranger = User.objects.create_user("sam", "sam@example.org", "pw-sam-123456")
    client.force_login(stranger)
    for url in ("/clusters/off/templates/", "/clusters/off/templates/hello/"):
        r = client.get(url)
        assert r.status_code == 403
        assert 'class="decision denied"' in r.content.decode()
    assert client.get("/clusters/nowhere/templates/").status_code == 404


def test_the_pages_require_sign_in(client, offline):
    make_template(offline, body=TEXT_ONLY)
    assert client.get("/clusters/off/templates/")["Location"].startswith("/accounts/login/")
    assert client.get("/clusters/off/templates/hello/")["Location"].startswith("/accounts/login/")


def test_a_locked_field_is_shown_disabled_with_its_default(client, offline, lin):
    make_template(offline)
    client.force_login(lin)
    html = client.get("/clusters/off/templates/hello/").content.decode()
    locked = re.search(r"<select[^>]*id=\"id_partition\"[^>]*>", html).group(0)
    assert "disabled" in locked
    assert '<option value="debug" selected>debug</option>' in html
    assert "Set by the template; it cannot be changed." in html
    # Slurm does not answer here: the page says so instead of failing.
    assert "Offline did not answer, so its partitions are not listed" in html


# --- filled for real -------------------------------------------------------------------------------


@pytest.mark.slurm
@pytest.mark.root
def test_a_template_is_filled_previewed_saved_as_the_person_and_submitted(client, ada, demo_cluster):
    make_template(demo_cluster)
    client.force_login(ada.user)
    url = "/clusters/demo/templates/hello/"
    assert "Say hello" in client.get("/clusters/demo/templates/").content.decode()
    key = form_key(client, url)
    filled = {"idempotency_key": key, "minutes": "4", "cpus": "2", "greeting": "Hi there, Ada"}

    preview = client.post(url, {**filled, "action": "preview"})
    html = preview.content.decode()
    assert preview.status_code == 200, html
    assert "Preview: nothing is saved or queued yet" in html
    assert '<p class="decision allowed">This job may run on partition debug of Demo cluster.</p>' in html
    # 2 CPUs for 4 minutes: the one cost figure.
    assert '<p class="cost">Submitting reserves 0.133 CPU-hours (for its whole time limit);' in html
    expected = BODY.replace("{{ partition }}", "debug").replace("{{ minutes }}", "4")
    expected = expected.replace("{{ cpus }}", "2").replace("{{ greeting }}", "'Hi there, Ada'")
    assert f'<pre class="output" id="script">{escape(expected)}</pre>' in html
    assert '<td data-label="Option">--partition</td><td data-label="Value"><code>debug</code></td>' in html
    # The job runs where the preview says, the person's home, as the saved script will.
    assert (
        f'<td data-label="Field">Working directory</td><td data-label="Value"><code>{ada.home}</code></td>'
        in html
    )
    assert not (ada.home / "clusterra-jobs").exists()
    watch = SlurmWatch(ada)
    assert watch.new_jobs() == set()

    submitted = client.post(url, {**filled, "action": "submit", "previewed": digest_of(html)})
    assert submitted.status_code == 302, submitted.content.decode()
    record = JobRecord.objects.get(person=ada.user)
    assert submitted["Location"] == f"/clusters/demo/jobs/{record.slurm_job_id}/"

    # The file is in the person's home, theirs, exactly the script the preview showed.
    saved = list((ada.home / "clusterra-jobs").iterdir())
    assert len(saved) == 1
    path = saved[0]
    assert re.fullmatch(r"hello-\d{8}-\d{6}\.sh", path.name)
    assert path.read_text() == expected
    assert (path.stat().st_uid, path.parent.stat().st_uid) == (ada.uid, ada.uid)
    assert record.script_path == str(path)

    # Slurm has the job the template's #SBATCH lines asked for, as the person.
    assert watch.new_jobs() == {str(record.slurm_job_id)}
    job = scontrol(record.slurm_job_id)
    assert (job["JobName"], job["Partition"], job["TimeLimit"]) == ("ct-template", "debug", "00:04:00")
    assert job["UserId"].startswith(f"{ada.name}(")
    assert batch_script(record.slurm_job_id) == expected
    assert job["WorkDir"] == str(ada.home)
    assert record.submitted["job"]["working_directory"] == str(ada.home)
    assert record.submitted["job"]["cpus_per_task"] == 2

    events = AuditEvent.objects.filter(actor=ada.user)
    assert events.filter(action="job_template.save", target=str(path)).exists()
    assert events.filter(action="job.submit", outcome="allowed", target=f"job {record.slurm_job_id}").exists()

    # A second click of the same form saves and queues nothing more.
    again = client.post(url, {**filled, "action": "submit", "previewed": digest_of(html)})
    assert again["Location"] == submitted["Location"]
    assert len(list((ada.home / "clusterra-jobs").iterdir())) == 1
    assert JobRecord.objects.filter(person=ada.user).count() == 1

    sync_until(record, {"COMPLETED"})
    detail = client.get(submitted["Location"]).content.decode()
    assert f"Hi there, Ada from {ada.name}" in detail


@pytest.mark.slurm
@pytest.mark.root
def test_a_tampered_post_of_a_locked_field_is_ignored(client, ada, demo_cluster):
    make_template(demo_cluster)
    client.force_login(ada.user)
    url = "/clusters/demo/templates/hello/"
    filled = {"idempotency_key": form_key(client, url), "minutes": "2", "cpus": "1", "greeting": "hi"}
    tampered = {**filled, "partition": "gpu"}

    preview = client.post(url, {**tampered, "action": "preview"})
    html = preview.content.decode()
    assert preview.status_code == 200
    assert "#SBATCH --partition=debug" in html
    assert "--partition=gpu" not in html
    assert "This job may run on partition debug of Demo cluster." in html

    submitted = client.post(url, {**tampered, "action": "submit", "previewed": digest_of(html)})
    assert submitted.status_code == 302
    record = JobRecord.objects.get(person=ada.user)
    assert scontrol(record.slurm_job_id)["Partition"] == "debug"
    assert "#SBATCH --partition=debug\n" in Path(record.script_path).read_text()


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.parametrize(
    ("greeting", "said"),
    [
        ('x"; rm -rf ~; echo "', "Greeting may not contain &#x27;&quot;&#x27;"),
        ("hello\ntouch ~/pwned", "Greeting must be one line: it may not contain a line break."),
        ("$(touch ~/pwned)", "Greeting may not contain &#x27;$&#x27;"),
        ("-rf", "Greeting may not start with &#x27;-&#x27;"),
    ],
)
def test_text_that_could_run_as_shell_is_refused_and_nothing_is_saved_or_queued(
    client, ada, demo_cluster, greeting, said
):
    make_template(demo_cluster)
    client.force_login(ada.user)
    url = "/clusters/demo/templates/hello/"
    watch = SlurmWatch(ada)
    filled = {"idempotency_key": form_key(client, url), "minutes": "2", "cpus": "1", "greeting": greeting}
    for action in ("preview", "submit"):
        r = client.post(url, {**filled, "action": action, "previewed": "x"})
        html = r.content.decode()
        assert r.status_code == 400
        assert said in html
        assert 'id="id_greeting-error"' in html
        assert 'id="preview"' not in html
    assert not (ada.home / "clusterra-jobs").exists()
    assert not (ada.home / "pwned").exists()
    assert watch.new_jobs() == set()
    assert not JobRecord.objects.exists()


@pytest.mark.slurm
@pytest.mark.root
def test_a_submit_that_was_not_previewed_shows_its_preview_and_saves_nothing(client, ada, demo_cluster):
    make_template(demo_cluster)
    client.force_login(ada.user)
    url = "/clusters/demo/templates/hello/"
    filled = {"idempotency_key": form_key(client, url), "minutes": "2", "cpus": "1", "greeting": "one"}
    html = client.post(url, {**filled, "action": "preview"}).content.decode()
    # The value changed after the preview: what would be saved is not what was shown.
    r = client.post(url, {**filled, "greeting": "two", "action": "submit", "previewed": digest_of(html)})
    assert r.status_code == 200
    page = r.content.decode()
    assert "This is not the script you previewed" in page
    assert "GREETING=two" in page
    assert not (ada.home / "clusterra-jobs").exists()
    assert not JobRecord.objects.exists()


@pytest.mark.slurm
@pytest.mark.root
def test_a_job_the_policy_refuses_is_shown_refused_and_leaves_no_file(client, people, demo_cluster):
    capped = people(quota={"max_walltime": 2})
    make_template(demo_cluster)
    client.force_login(capped.user)
    url = "/clusters/demo/templates/hello/"
    filled = {"idempotency_key": form_key(client, url), "minutes": "3", "cpus": "1", "greeting": "hi"}
    preview = client.post(url, {**filled, "action": "preview"})
    html = preview.content.decode()
    assert preview.status_code == 403
    said = "This job asks for 3 minutes of walltime; your quota allows at most 2 minutes per job on Demo"
    assert said in html
    assert 'class="decision denied"' in html
    assert 'value="submit"' not in html  # no Save and submit for a refused job
    # Posted anyway (with the digest of what would be saved): refused the same way, nothing written.
    digest = hashlib.sha256(
        BODY.replace("{{ partition }}", "debug")
        .replace("{{ minutes }}", "3")
        .replace("{{ cpus }}", "1")
        .replace("{{ greeting }}", "hi")
        .encode()
    ).hexdigest()
    r = client.post(url, {**filled, "action": "submit", "previewed": digest})
    assert r.status_code == 403
    assert said in r.content.decode()
    assert not (capped.home / "clusterra-jobs").exists()
    assert not JobRecord.objects.exists()
