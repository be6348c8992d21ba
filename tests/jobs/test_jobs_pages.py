"""The job pages: dashboard, submit form and preview, live list, job detail and output, cancel, API tokens."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from access.models import Grant, Quota, Usage
from accounts.models import ApiToken, User
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
    assert "No cluster is registered yet" in client.get("/").content.decode()


def test_a_cluster_without_a_grant_shows_the_decisions_sentence_only(client, lin, offline):
    client.force_login(lin)
    page = client.get("/").content.decode()
    assert "You have no access to Offline; ask an administrator for a grant." in page
    assert "Submit a job" not in page


def test_the_dashboard_shows_quota_gauges_and_the_use_chart(client, lin, offline):
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
        used_cpu_hours=5,
        ended_at=timezone.now(),
        job_id=1,
    )
    client.force_login(lin)
    page = client.get("/").content.decode()
    assert "Not answering:" in page  # slurmrestd is down: the partitions say so, the rest still shows
    assert "GPU-hours" in page
    assert "2.5 of 10.0" in page
    assert 'class="used" style="width: 25%"' in page
    assert "Running jobs" in page
    assert "<svg" in page
    assert "2.5 GPU-hours" in page


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.every_release
def test_the_dashboard_shows_partitions_nodes_and_gpus_read_live(client, ada):
    client.force_login(ada.user)
    page = client.get("/").content.decode()
    assert "Not answering" not in page, page
    for partition in ("cpu", "gpu", "debug"):
        assert f"<td>{partition}" in page
    assert "(default)" in page
    assert "30 min" in page
    assert re.search(r"<td>\d+ / \d+</td>", page)  # GPUs idle / allocated


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
    assert "<td>--job-name</td><td><code>ct-page</code></td>" in html
    assert "0.05 CPU-hours" in html
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
def test_cancel_from_the_job_page(client, ada):
    path = ada.script("wait.sh", "#!/bin/sh\n#SBATCH -p debug -t 5\nsleep 60\n")
    client.force_login(ada.user)
    client.post("/clusters/demo/submit/", {"script_path": path, "action": "submit", "idempotency_key": "c1"})
    record = JobRecord.objects.get(person=ada.user)
    assert "Cancel this job" in client.get(f"/clusters/demo/jobs/{record.slurm_job_id}/").content.decode()
    r = client.post(f"/clusters/demo/jobs/{record.slurm_job_id}/cancel")
    assert r.status_code == 302
    record.refresh_from_db()
    assert record.state in ("CANCELLED", "COMPLETING", "RUNNING", "PENDING")
    sync_until(record, {"CANCELLED"})
    assert AuditEvent.objects.filter(action="job.cancel", actor=ada.user, outcome="allowed").exists()


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
