"""The job pages: dashboard, submit form and preview, live list, job detail and output, cancel, API tokens."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from access.models import Grant, Quota, Usage
from accounts import api_tokens
from accounts.models import ApiToken, DemoMember, PosixAccount, User
from audit.models import AuditEvent
from clusters.models import Cluster
from jobs.models import JobRecord
from tests.support.jobs_support import squeue, sync_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline(db, tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"k" * 32)
    return Cluster.objects.create(
        slug="off", name="Offline", slurmrestd_url="http://127.0.0.1:9", jwt_key_ref=str(key)
    )


@pytest.fixture
def lin(db):
    return User.objects.create_user("lin", "lin@example.org", "pw-lin-123456")


def make_jobs(person, cluster, count: int, **fields) -> None:
    now = timezone.now()
    JobRecord.objects.bulk_create(
        [
            JobRecord(
                cluster=cluster,
                person=person,
                posix_user="lin",
                slurm_job_id=1000 + i,
                name=f"job-{i}",
                partition="gpu" if i % 3 == 0 else "cpu",
                state="RUNNING" if i % 2 else "COMPLETED",
                submit_time=now - timedelta(seconds=count - i),
                **fields,
            )
            for i in range(count)
        ]
    )


# --- dashboard --------------------------------------------------------------------------------------


def test_the_dashboard_requires_sign_in(client):
    r = client.get("/")
    assert r.status_code == 302
    assert "login" in r["Location"]


def test_the_dashboard_says_when_there_is_no_cluster(client, lin):
    client.force_login(lin)
    page = client.get("/").content.decode()
    assert '<div class="empty">' in page
    assert "No cluster is registered yet" in page
    assert "Ask an administrator to add one" in page  # the next step, for someone who cannot add one


def test_a_cluster_without_a_grant_shows_the_decisions_sentence_only(client, lin, offline):
    client.force_login(lin)
    page = client.get("/").content.decode()
    assert "You have no access to Offline; ask an administrator for a grant." in page
    assert "Submit a job" not in page


def test_the_dashboard_says_quotas_in_words_with_what_is_left(client, lin, offline):
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    Quota.objects.create(
        cluster=offline, user=lin, gpu_hours=10, cpu_hours=100, max_running_jobs=4, period="month"
    )
    Usage.objects.create(
        cluster=offline,
        user=lin,
        username="lin",
        state="settled",
        used_gpu_hours=2.5,
        used_cpu_hours=1 / 600,  # 6 CPU-seconds: the ledger's float, never shown whole
        ended_at=timezone.now(),
        job_id=1,
    )
    client.force_login(lin)
    page = client.get("/").content.decode()
    assert "Not answering:" in page  # slurmrestd is down: the partitions say so, the rest still shows
    assert "7.5 of 10 GPU-hours left this month" in page
    assert "100 of 100 CPU-hours left this month" in page
    assert "0.00167 used" in page
    assert "0.0016666" not in page
    assert "0 of 4 jobs running" in page
    assert 'class="used" style="width: 25%"' in page
    assert "<svg" in page
    assert "2.5 GPU-hours in all" in page


def test_the_dashboard_says_when_demo_access_ends(client, lin, offline, settings):
    settings.TIME_ZONE = "UTC"
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    expires = timezone.now().replace(year=2031, month=3, day=4, hour=5, minute=6, second=0, microsecond=0)
    DemoMember.objects.create(user=lin, via=DemoMember.Via.EMAIL, expires=expires)
    client.force_login(lin)
    page = client.get("/").content.decode()
    assert (
        f'Your demo access ends <time datetime="{expires.isoformat()}">2031-03-04 05:06 UTC</time>.' in page
    )
    DemoMember.objects.filter(user=lin).update(ended=timezone.now())
    assert "Your demo access ends" not in client.get("/").content.decode()


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.every_release
def test_the_dashboard_shows_partitions_nodes_and_gpus_read_live(client, ada):
    client.force_login(ada.user)
    page = client.get("/").content.decode()
    assert "Not answering" not in page, page
    for partition in ("cpu", "gpu", "debug"):
        assert f'<td data-label="Partition"><strong>{partition}</strong>' in page
    assert "(default)" in page
    assert "30 min" in page
    assert re.search(r'<td data-label="GPUs idle / allocated">\d+ / \d+</td>', page)
    assert '<span class="badge state-up">UP</span>' in page


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db
def test_the_partitions_you_may_use_come_first_and_are_marked(client, people, demo_cluster):
    newcomer = people(grant=False)
    Grant.objects.create(cluster=demo_cluster, user=newcomer.user, partitions="debug")
    client.force_login(newcomer.user)
    page = client.get("/").content.decode()
    rows = re.findall(
        r'<td data-label="Partition"><strong>(\w+)</strong>.*?<td data-label="For you">(.*?)</td>', page, re.S
    )
    assert rows[0] == ("debug", '<span class="badge ok">You may submit</span>'), rows
    assert {"cpu", "gpu"} <= {name for name, _ in rows[1:]}
    assert all("You may submit" not in mark for _, mark in rows[1:])


# --- the live list ---------------------------------------------------------------------------------


def test_the_list_shows_a_page_filters_and_a_live_endpoint(client, lin, offline):
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    make_jobs(lin, offline, 120)
    client.force_login(lin)

    page = client.get("/clusters/off/jobs/?state=RUNNING&partition=cpu")
    html = page.content.decode()
    assert page.status_code == 200
    rows = re.findall(r'<tr data-job="(\d+)">', html)
    expected = [str(1000 + i) for i in reversed(range(120)) if i % 2 and i % 3]
    assert rows == expected[:50]
    assert "page 1 of 1" in html or "page 1 of" in html
    assert "jobs/job_list.js" in html

    data_url = re.search(r'data-url="([^"]+)"', html).group(1).replace("&amp;", "&")
    first = client.get(data_url).json()
    assert first["changed"] is True
    assert first["total"] == len(expected)
    quiet = client.get(f"{data_url}&since={first['update_time']}").json()
    assert quiet == {"changed": False, "update_time": quiet["update_time"]}
    time.sleep(0.01)
    JobRecord.objects.get(slurm_job_id=1001).save()
    assert client.get(f"{data_url}&since={quiet['update_time']}").json()["changed"] is True


def test_ten_thousand_jobs_list_in_a_few_queries(client, lin, offline, django_assert_max_num_queries):
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    make_jobs(lin, offline, 10_000)
    client.force_login(lin)
    started = time.monotonic()
    with django_assert_max_num_queries(12):
        r = client.get("/clusters/off/jobs/data?page=150")
    assert time.monotonic() - started < 1.0
    body = r.json()
    assert (body["total"], body["page"], body["pages"], len(body["jobs"])) == (10_000, 150, 200, 50)
    assert body["jobs"][0]["id"] == 1000 + 10_000 - 1 - 149 * 50


def test_the_partition_filter_offers_each_partition_once_from_one_narrow_query(client, lin, offline):
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    make_jobs(lin, offline, 30)
    other = User.objects.create(username="other")
    JobRecord.objects.create(
        cluster=offline, person=other, posix_user="o", slurm_job_id=4000, partition="secret"
    )
    JobRecord.objects.create(cluster=offline, person=lin, posix_user="lin", slurm_job_id=5000, partition="")
    client.force_login(lin)
    with CaptureQueriesContext(connection) as queries:
        html = client.get("/clusters/off/jobs/").content.decode()
    select = html.split('name="partition"')[1].split("</select>")[0]
    offered = re.findall(r'<option value="([^"]+)">\1</option>', select)
    assert offered == ["cpu", "gpu"]
    distinct = [q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"]]
    # Only the partition: JobRecord's default ordering would add created and id to the DISTINCT.
    assert len(distinct) == 1
    columns = distinct[0].split(" FROM ")[0]
    assert '"partition"' in columns
    assert '"created"' not in columns
    assert '"id"' not in columns
    assert "ORDER BY" not in distinct[0]


# A page number is a whole number from 1; str.isdigit() also says yes to "²", which int() refuses.
NOT_A_PAGE = ["abc", "0", "-2", "1.5", " 2", "²", "\u0661", "9" * 5000 + "x"]
# Past the last page: 4301 digits and more are more than int() will read at all.
PAST_THE_END = ["4", "1000000", "9" * 30, "9" * 5000]


@pytest.mark.parametrize("raw", NOT_A_PAGE)
def test_a_page_that_is_not_a_number_shows_page_one_with_a_sentence(client, lin, offline, raw):
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    make_jobs(lin, offline, 120)
    client.force_login(lin)

    page = client.get("/clusters/off/jobs/", {"page": raw})
    html = page.content.decode()
    assert page.status_code == 200
    assert "page 1 of 3" in html
    assert re.findall(r'<tr data-job="(\d+)">', html)[0] == "1119"
    assert "page must be a positive whole number, not " in html
    # The live list's feed answers like the API: a 400 that says which value it could not read.
    feed = client.get("/clusters/off/jobs/data", {"page": raw})
    assert feed.status_code == 400
    error = feed.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("page must be a positive whole number, not ")
    assert len(error["message"]) < 120  # a long value is cut short, not echoed whole


@pytest.mark.parametrize("raw", PAST_THE_END)
def test_a_page_past_the_end_shows_the_last_page(client, lin, offline, raw):
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    make_jobs(lin, offline, 120)
    client.force_login(lin)

    with CaptureQueriesContext(connection) as queries:
        page = client.get("/clusters/off/jobs/", {"page": raw})
    html = page.content.decode()
    assert page.status_code == 200
    assert "page 3 of 3" in html
    assert re.findall(r'<tr data-job="(\d+)">', html) == [str(1000 + i) for i in reversed(range(20))]
    assert not any("OFFSET 99" in q["sql"] for q in queries.captured_queries)
    feed = client.get("/clusters/off/jobs/data", {"page": raw}).json()
    assert (feed["page"], feed["pages"], len(feed["jobs"])) == (3, 3, 20)


def test_the_list_writes_dates_and_durations_as_the_live_redraw_does(client, lin, offline, settings):
    settings.TIME_ZONE = "UTC"
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    started = timezone.now() - timedelta(hours=1, minutes=2, seconds=3)
    submitted = started.replace(second=0, microsecond=0) - timedelta(minutes=5)
    JobRecord.objects.create(
        cluster=offline,
        person=lin,
        posix_user="lin",
        slurm_job_id=1,
        state="RUNNING",
        submit_time=submitted,
        start_time=started,
    )
    JobRecord.objects.create(
        cluster=offline,
        person=lin,
        posix_user="lin",
        slurm_job_id=2,
        state="COMPLETED",
        submit_time=submitted,
        start_time=started,
        end_time=started + timedelta(seconds=5),
    )
    client.force_login(lin)
    html = client.get("/clusters/off/jobs/").content.decode()
    running = html.split('<tr data-job="1">')[1].split("</tr>")[0]
    done = html.split('<tr data-job="2">')[1].split("</tr>")[0]
    # One date format, and a running job's elapsed time as a <time> the page ticks every second.
    assert f'<time datetime="{submitted.isoformat()}">{submitted:%Y-%m-%d %H:%M} UTC</time>' in running
    since = re.search(r'<time data-elapsed-since="([^"]+)">(1:02:0\d)</time>', running)
    assert since, running
    assert '<span class="badge state-running">RUNNING</span>' in running
    assert '<td data-label="Elapsed">0:00:05</td>' in done
    # The live redraw draws from the same numbers: seconds, and the start it ticks from.
    data = client.get("/clusters/off/jobs/data").json()
    by_id = {job["id"]: job for job in data["jobs"]}
    assert by_id[2]["elapsed_seconds"] == 5
    assert by_id[1]["start_time"] == since.group(1)
    script = (Path(__file__).parents[2] / "jobs/static/jobs/job_list.js").read_text()
    assert "format.duration(job.elapsed_seconds)" in script
    assert "format.when(" in script
    assert "job.elapsed)" not in script  # the API's Slurm-style "00:00:05" is not what the page writes
    # Every cell is labelled, so a phone shows each row as a block that still says what is what.
    assert not re.findall(r"<td(?![^>]*data-label)[^>]*>", running + done)


def test_cancel_asks_first_and_a_get_changes_nothing(client, lin, offline):
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    PosixAccount.objects.create(user=lin, username="lin", uid=70001, gid=70001)
    JobRecord.objects.create(
        cluster=offline,
        person=lin,
        posix_user="lin",
        slurm_job_id=41,
        name="train",
        state="RUNNING",
        start_time=timezone.now(),
        stdout_path="/home/lin/slurm-41.out",
        node_list="n1",
    )
    JobRecord.objects.create(
        cluster=offline, person=lin, posix_user="lin", slurm_job_id=42, name="queued", state="PENDING"
    )
    JobRecord.objects.create(
        cluster=offline,
        person=lin,
        posix_user="lin",
        slurm_job_id=43,
        state="COMPLETED",
        end_time=timezone.now(),
    )
    client.force_login(lin)
    listing = client.get("/clusters/off/jobs/").content.decode()
    assert 'href="/clusters/off/jobs/41/cancel"' in listing
    assert 'href="/clusters/off/jobs/42/cancel"' in listing
    assert 'href="/clusters/off/jobs/43/cancel"' not in listing  # an ended job has nothing to cancel
    detail = client.get("/clusters/off/jobs/41/").content.decode()
    assert '<a class="btn btn-danger" href="/clusters/off/jobs/41/cancel">Cancel this job</a>' in detail
    assert "<form" not in detail.split("<main")[1].split("</main>")[0]  # no button on the page cancels

    page = client.get("/clusters/off/jobs/41/cancel")
    html = page.content.decode()
    assert page.status_code == 200
    assert "Cancel job 41 (train)?" in html
    assert "It stops now: Slurm ends its processes on n1." in html
    assert "Its output so far stays (/home/lin/slurm-41.out)." in html
    assert "Your budget is charged for the time it ran and no more" in html
    assert 'action="/clusters/off/jobs/41/cancel"' in html
    assert 'href="/clusters/off/jobs/41/"' in html  # "Keep it" goes back to the job
    pending = client.get("/clusters/off/jobs/42/cancel").content.decode()
    assert "It has not started: it leaves the queue and never runs." in pending
    assert "Nothing is charged; its reservation is released." in pending
    # Asking changed nothing: no state, no audit of a cancel.
    assert JobRecord.objects.get(slurm_job_id=41).state == "RUNNING"
    assert not AuditEvent.objects.filter(action="job.cancel").exists()

    ended = client.get("/clusters/off/jobs/43/cancel")
    assert ended.status_code == 409
    assert "Job 43 already ended (COMPLETED); there is nothing to cancel." in ended.content.decode()
    assert client.get("/clusters/off/jobs/77/cancel").status_code == 404


def test_someone_elses_job_page_is_404(client, lin, offline):
    other = User.objects.create(username="other")
    JobRecord.objects.create(
        cluster=offline, person=other, posix_user="other", slurm_job_id=77, state="RUNNING"
    )
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    client.force_login(lin)
    r = client.get("/clusters/off/jobs/77/")
    assert r.status_code == 404
    assert "You have no job 77 on Offline." in r.content.decode()
    assert client.post("/clusters/off/jobs/77/cancel").status_code == 404


def said_to_people(html: str) -> str:
    """The sentences a page says about what is wrong: field errors, the form's errors, a refusal."""
    found = re.findall(r'<p class="field-error"[^>]*>(.*?)</p>', html, re.S)
    found += re.findall(
        r'<div class="(?:form-errors|decision denied)" role="alert"[^>]*>(.*?)</div>', html, re.S
    )
    return " ".join(found)


def test_the_submit_page_names_fields_as_the_form_does(client, lin, offline):
    Grant.objects.create(cluster=offline, user=lin, all_partitions=True)
    client.force_login(lin)
    form = {
        "script_path": "/home/lin/run.sh",
        "time_limit": "soon",
        "idempotency_key": "k",
        "action": "preview",
    }
    r = client.post("/clusters/off/submit/", form)
    assert r.status_code == 400
    html = r.content.decode()
    said = said_to_people(html)
    assert said.startswith("Time limit: "), said
    assert "time_limit" not in said
    # Under its own field, which says it is the one that is wrong.
    time_input = re.search(r'<input[^>]*id="id_time_limit"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in time_input
    assert "id_time_limit-error" in time_input

    r = client.post("/clusters/off/submit/", form | {"time_limit": "", "script_path": "run.sh"})
    assert r.status_code == 400
    said = said_to_people(r.content.decode())
    assert "Script path must be an absolute path (starting with /), not &#x27;run.sh&#x27;." in said
    assert "script_path" not in said

    # /v1 keeps its contract: the JSON field's own name.
    _, raw = api_tokens.issue(lin, name="t")
    api = client.post(
        "/v1/clusters/off/jobs",
        {"script_path": "run.sh"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert api.json()["error"]["message"].startswith("script_path must be an absolute path")


# --- submit, detail, cancel: for real ---------------------------------------------------------------


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.every_release
@pytest.mark.django_db
def test_preview_then_submit_then_watch_and_read_output(client, ada):
    path = ada.script("page.sh", "#!/bin/bash\n#SBATCH -J ct-page\n#SBATCH -t 3\necho from the page\n")
    client.force_login(ada.user)
    form = client.get("/clusters/demo/submit/").content.decode()
    assert '<option value="debug">debug — at most 30 min</option>' in form
    key = re.search(r'name="idempotency_key" value="(\w+)"', form).group(1)

    preview = client.post(
        "/clusters/demo/submit/",
        {"script_path": path, "partition": "debug", "action": "preview", "idempotency_key": key},
    )
    html = preview.content.decode()
    assert preview.status_code == 200
    assert "Preview: nothing is queued yet" in html
    assert "This job may run on partition debug of Demo cluster." in html
    assert '<td data-label="Option">--job-name</td><td data-label="Value"><code>ct-page</code></td>' in html
    assert '<td data-label="Field">Time limit</td><td data-label="Value"><code>3</code></td>' in html
    assert "Submitting reserves 0.05 CPU-hours" in html
    assert squeue(ada.name) == []

    submitted = client.post(
        "/clusters/demo/submit/",
        {"script_path": path, "partition": "debug", "action": "submit", "idempotency_key": key},
    )
    assert submitted.status_code == 302
    record = JobRecord.objects.get(person=ada.user)
    assert submitted["Location"] == f"/clusters/demo/jobs/{record.slurm_job_id}/"
    again = client.post(
        "/clusters/demo/submit/",
        {"script_path": path, "partition": "debug", "action": "submit", "idempotency_key": key},
    )
    assert again.status_code == 302  # a double click queues nothing more
    assert JobRecord.objects.filter(person=ada.user).count() == 1

    sync_until(record, {"COMPLETED"})
    detail = client.get(submitted["Location"]).content.decode()
    assert "COMPLETED" in detail
    assert "from the page" in detail
    assert f"/clusters/demo/terminal/?cwd={str(ada.home).replace('/', '%2F')}" in detail
    listing = client.get("/clusters/demo/jobs/").content.decode()
    assert f'<tr data-job="{record.slurm_job_id}">' in listing


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.every_release
@pytest.mark.django_db
def test_the_form_starts_on_a_partition_the_person_may_use(client, people, demo_cluster):
    # Slurm's default partition (cpu) is not theirs: the form must not start on a refusal.
    newcomer = people(grant=False)
    Grant.objects.create(cluster=demo_cluster, user=newcomer.user, partitions="debug")
    client.force_login(newcomer.user)
    form = client.get("/clusters/demo/submit/").content.decode()
    assert '<option value="debug" selected>debug — at most 30 min</option>' in form
    assert 'value="cpu"' not in form
    # With the default theirs, the script's --partition (or that default) decides: nothing is preselected.
    Grant.objects.filter(user=newcomer.user).update(partitions="", all_partitions=True)
    form = client.get("/clusters/demo/submit/").content.decode()
    assert '<option value="" selected>— from the script, or the default —</option>' in form


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.every_release
@pytest.mark.django_db
def test_a_denied_preview_shows_the_sentence_and_the_job_it_refused(client, people):
    capped = people(quota={"max_walltime": 10})
    path = capped.script("long.sh", "#!/bin/sh\n#SBATCH -t 20\nsleep 1\n")
    client.force_login(capped.user)
    r = client.post(
        "/clusters/demo/submit/", {"script_path": path, "action": "submit", "idempotency_key": "k1"}
    )
    assert r.status_code == 403
    html = r.content.decode()
    assert (
        "This job asks for 20 minutes of walltime; "
        "your quota allows at most 10 minutes per job on Demo cluster." in html
    )
    assert "The final job" in html
    assert not JobRecord.objects.exists()


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.every_release
@pytest.mark.django_db
def test_cancel_from_the_job_page_asks_then_cancels(client, ada):
    path = ada.script("wait.sh", "#!/bin/sh\n#SBATCH -p debug -t 5\nsleep 60\n")
    client.force_login(ada.user)
    client.post("/clusters/demo/submit/", {"script_path": path, "action": "submit", "idempotency_key": "c1"})
    record = JobRecord.objects.get(person=ada.user)
    job_page = client.get(f"/clusters/demo/jobs/{record.slurm_job_id}/").content.decode()
    assert f'href="/clusters/demo/jobs/{record.slurm_job_id}/cancel">Cancel this job</a>' in job_page

    asked = client.get(f"/clusters/demo/jobs/{record.slurm_job_id}/cancel")
    assert asked.status_code == 200
    assert f"Cancel job {record.slurm_job_id} (wait.sh)?" in asked.content.decode()
    assert str(record.slurm_job_id) in squeue(ada.name)  # asking cancelled nothing
    assert not AuditEvent.objects.filter(action="job.cancel").exists()

    r = client.post(f"/clusters/demo/jobs/{record.slurm_job_id}/cancel")
    assert r.status_code == 302
    record.refresh_from_db()
    assert record.state in ("CANCELLED", "COMPLETING", "RUNNING", "PENDING")
    sync_until(record, {"CANCELLED"})
    assert AuditEvent.objects.filter(action="job.cancel", actor=ada.user, outcome="allowed").exists()


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db
def test_a_preview_says_one_cost_the_reservation_submit_makes(client, people):
    budgeted = people(quota={"cpu_hours": 10, "period": "month"})
    path = budgeted.script("short.sh", "#!/bin/sh\n#SBATCH -p debug -t 2\nsleep 1\n")
    client.force_login(budgeted.user)
    r = client.post(
        "/clusters/demo/submit/", {"script_path": path, "action": "preview", "idempotency_key": "p1"}
    )
    assert r.status_code == 200
    preview = r.content.decode().split('id="preview"')[1]
    # 2 minutes of 1 CPU: 0.0333… CPU-hours reserved. The policy's own sentence rounds it up to 0.1 (the
    # API still says so); the page says the reservation, once, as every figure is written.
    assert "This job may run on partition debug of Demo cluster." in preview
    assert "Submitting reserves 0.0333 CPU-hours" in preview
    assert "You have 10 CPU-hours left." in preview
    assert "asks for" not in preview
    assert "0.1 CPU-hours" not in preview
    assert "0.03 CPU-hours" not in preview
    submitted = client.post(
        "/clusters/demo/submit/", {"script_path": path, "action": "submit", "idempotency_key": "p2"}
    )
    assert submitted.status_code == 302
    reserved = Usage.objects.get(user=budgeted.user).reserved_cpu_hours
    assert f"{reserved:.3g}" == "0.0333"  # what the preview said is what submit reserved


# --- API tokens -------------------------------------------------------------------------------------


def test_a_token_is_shown_once_listed_by_its_prefix_and_revocable(client, lin):
    client.force_login(lin)
    made = client.post("/tokens/", {"name": "laptop", "days": 30})
    assert made.status_code == 200
    assert "no-store" in made["Cache-Control"]
    raw = re.search(r'id="new-token">(ct_[\w-]+)<', made.content.decode()).group(1)
    token = ApiToken.objects.get(user=lin)
    assert raw.startswith(token.prefix)
    assert raw not in client.get("/tokens/").content.decode()
    assert client.get("/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200

    client.post(f"/tokens/{token.pk}/revoke")
    token.refresh_from_db()
    assert token.revoked is not None
    assert client.get("/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_someone_elses_token_cannot_be_revoked(client, lin):
    other = User.objects.create(username="other")
    from accounts import api_tokens

    token, _ = api_tokens.issue(other)
    client.force_login(lin)
    assert client.post(f"/tokens/{token.pk}/revoke").status_code == 404
    token.refresh_from_db()
    assert token.revoked is None


@pytest.mark.parametrize(
    "callback",
    [
        "http://evil.example:8000/cb",
        "https://127.0.0.1:9/cb",
        "http://127.0.0.1/cb",
        "javascript:alert(1)",
        "",
    ],
)
def test_the_cli_login_page_only_hands_tokens_to_a_loopback_address(client, lin, callback):
    client.force_login(lin)
    r = client.post("/tokens/cli/", {"callback": callback, "state": "abc"})
    assert r.status_code == 400
    assert not ApiToken.objects.exists()


def test_the_cli_login_page_asks_then_posts_a_new_token_to_the_command(client, lin):
    client.force_login(lin)
    ask = client.get("/tokens/cli/?callback=http://127.0.0.1:5555/callback&state=s-1&host=laptop")
    assert "asks for an API token to act as <strong>lin</strong>" in ask.content.decode()
    assert not ApiToken.objects.exists()
    r = client.post(
        "/tokens/cli/", {"callback": "http://127.0.0.1:5555/callback", "state": "s-1", "host": "laptop"}
    )
    html = r.content.decode()
    assert 'action="http://127.0.0.1:5555/callback"' in html
    token = ApiToken.objects.get(user=lin)
    assert token.name == "clusterra CLI on laptop"
    assert f'name="token" value="{token.prefix}' in html
