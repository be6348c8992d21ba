"""A job array followed from Slurm's own job lists: one record with its tasks under it, the array's state
from its tasks, the ledger reserved for all of them and settled once, with their real use, when the last
one ends. The lists are slurmrestd v0.0.38 answers as the real 22.05 gives them, read by its adapter."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from access import ledger
from access.models import Grant, Usage
from access.policy import Resources
from accounts import api_tokens
from accounts.models import PosixAccount, User
from clusters.models import Cluster
from clusters.slurm.v0038 import V0038Adapter
from jobs import accounting, present, tracking
from jobs.models import JobRecord
from jobs.tracking import Report

pytestmark = pytest.mark.django_db

T0 = 1_796_000_000  # seconds since the epoch, as Slurm writes them
ADAPTER = V0038Adapter("http://127.0.0.1:9", user_name="lin", token="t", version="v0.0.38")


@pytest.fixture
def cluster(db, tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"k" * 32)
    return Cluster.objects.create(
        slug="c", name="C", slurmrestd_url="http://127.0.0.1:9", jwt_key_ref=str(key)
    )


@pytest.fixture
def lin(cluster):
    person = User.objects.create(username="lin")
    PosixAccount.objects.create(user=person, username="lin", uid=200300, gid=200300)
    Grant.objects.create(cluster=cluster, user=person, all_partitions=True)
    return person


@pytest.fixture
def array(cluster, lin):
    """A console array of 4 tasks, 2 CPUs and 10 minutes each, 2 at once: as a submit leaves it."""
    decision = ledger.reserve(lin, cluster, Resources("cpu", cpus=2, time_limit=10, array="0-3%2"))
    assert decision.allowed
    ledger.attach(decision.reservation_id, 500)
    return JobRecord.objects.create(
        cluster=cluster,
        person=lin,
        posix_user="lin",
        slurm_job_id=500,
        array="0-3%2",
        state="PENDING",
        cpus=2,
        reservation_id=decision.reservation_id,
        ledger=JobRecord.Ledger.RESERVED,
    )


def raw(job_id: int, state: str, *, task: int | None = None, held: str = "", ran: int | None = None, **extra):
    """One job of slurmrestd's list: the array's record of unstarted tasks (`held`) or one task."""
    started = T0 + 10 if ran is not None or state == "RUNNING" else 0
    return {
        "job_id": job_id,
        "array_job_id": 500,
        "array_task_id": task,
        "array_task_string": held,
        "array_max_tasks": 2,
        "name": "sweep",
        "user_name": "lin",
        "partition": "cpu",
        "account": "demo",
        "qos": "normal",
        "job_state": state,
        "state_reason": "JobArrayTaskLimit" if state == "PENDING" else "None",
        "submit_time": T0,
        "start_time": started,
        "end_time": started + ran if ran is not None else 0,
        "time_limit": 10,
        "nodes": "n1" if started else "",
        "batch_host": "n1" if started else "",
        "node_count": 1,
        "cpus": 2,
        "current_working_directory": "/home/lin/sweep",
        "standard_output": "out-%A_%a.txt",
        "standard_error": "",
        "exit_code": 0,
    } | extra


def listed(*jobs: dict):
    return [ADAPTER.parse_job(j) for j in jobs]


def usage(array: JobRecord) -> Usage:
    return Usage.objects.get(pk=array.reservation_id)


def test_an_array_becomes_one_record_with_its_tasks_under_it_and_settles_once(array):
    report = Report()
    tracking.apply_array(array, listed(raw(500, "PENDING", held="0-3%2")), report)
    array.refresh_from_db()
    assert (array.state, array.reason, array.array_summary["counts"]) == (
        "PENDING",
        "JobArrayTaskLimit",
        {"PENDING": 4},
    )
    assert array.array_summary["held"] == "0-3%2"
    assert (usage(array).state, usage(array).tasks_queued) == ("queued", 4)

    # Two tasks start, each a job of its own; the array's record holds the other two.
    tracking.apply_array(
        array,
        listed(raw(501, "RUNNING", task=0), raw(502, "RUNNING", task=1), raw(500, "PENDING", held="2-3%2")),
        report,
    )
    array.refresh_from_db()
    assert (array.state, array.ledger) == ("RUNNING", "started")
    assert array.array_summary["counts"] == {"PENDING": 2, "RUNNING": 2}
    entry = usage(array)
    assert (entry.state, entry.tasks_queued, entry.tasks_running) == ("running", 2, 2)
    task0 = array.tasks.get(array_task_id=0)
    assert (task0.slurm_job_id, task0.job_id_text, task0.person, task0.origin) == (
        501,
        "500_0",
        array.person,
        "console",
    )
    assert task0.stdout_path == "/home/lin/sweep/out-500_0.txt"  # %A the array, %a the task

    # Task 0 ends after a minute: its share of the reservation becomes what it used.
    tracking.apply_array(
        array,
        listed(
            raw(501, "COMPLETED", task=0, ran=60),
            raw(502, "RUNNING", task=1),
            raw(503, "RUNNING", task=2),
            raw(500, "PENDING", held="3"),
        ),
        report,
    )
    entry = usage(array)
    assert entry.state == "running"
    assert entry.used_cpu_hours == pytest.approx(60 / 3600 * 2)
    assert entry.reserved_cpu_hours == pytest.approx(3 * 10 / 60 * 2)
    assert (entry.tasks_queued, entry.tasks_running) == (1, 2)

    # The last task to start takes over the array's own job id; then every task ends.
    done = listed(
        raw(501, "COMPLETED", task=0, ran=60),
        raw(502, "COMPLETED", task=1, ran=120),
        raw(503, "FAILED", task=2, ran=30, exit_code=256),
        raw(500, "COMPLETED", task=3, ran=90),
    )
    tracking.apply_array(array, done, report)
    array.refresh_from_db()
    assert (array.state, array.ledger) == ("FAILED", "settled")
    assert array.array_summary["counts"] == {"COMPLETED": 3, "FAILED": 1}
    assert array.end_time == datetime.fromtimestamp(T0 + 10 + 120, UTC)
    assert sorted(array.tasks.values_list("array_task_id", "slurm_job_id")) == [
        (0, 501),
        (1, 502),
        (2, 503),
        (3, 500),
    ]
    entry = usage(array)
    assert entry.state == "settled"
    assert entry.elapsed_seconds == 300
    assert entry.used_cpu_hours == pytest.approx(300 / 3600 * 2)

    # Seen again (the loop's next round, a page refreshing it): nothing is charged twice.
    settled = report.settled
    tracking.apply_array(array, done, report)
    assert report.settled == settled
    assert usage(array).used_cpu_hours == pytest.approx(300 / 3600 * 2)
    assert Usage.objects.count() == 1


def test_an_array_cancelled_before_any_task_ran_gives_its_reservation_back(array):
    tracking.apply_array(array, listed(raw(500, "CANCELLED", held="0-3%2", end_time=T0 + 5)))
    array.refresh_from_db()
    assert (array.state, array.ledger, array.array_summary["counts"]) == (
        "CANCELLED",
        "released",
        {"CANCELLED": 4},
    )
    assert usage(array).state == "released"
    assert not array.tasks.exists()


def test_a_task_cancelled_while_the_array_held_it_counts_as_cancelled_and_the_rest_runs_on(array):
    # Slurm drops a task cancelled before it started from the array's record, and lists it nowhere.
    tracking.apply_array(array, listed(raw(501, "RUNNING", task=0), raw(500, "PENDING", held="1,3")))
    array.refresh_from_db()
    assert array.array_summary["counts"] == {"CANCELLED": 1, "PENDING": 2, "RUNNING": 1}
    assert array.state == "RUNNING"
    assert not array.tasks.filter(array_task_id=2).exists()
    page = present.job_dict(array)
    assert page["tasks"]["summary"] == "1 running · 2 pending · 1 cancelled"
    assert (page["job_id"], page["array_job_id"], page["url"]) == ("500", 500, "/v1/clusters/c/jobs/500")
    [first] = present.task_rows(array)
    assert (first["job_id"], first["id"], first["page_url"]) == ("500_0", 501, "/clusters/c/jobs/500_0/")
    assert first["tasks"] is None

    # A running task cancelled is a task that ran: it is charged for what it used.
    tracking.apply_array(
        array,
        listed(
            raw(501, "CANCELLED", task=0, ran=120),
            raw(502, "COMPLETED", task=1, ran=60),
            raw(500, "COMPLETED", task=3, ran=60),
        ),
    )
    array.refresh_from_db()
    assert (array.state, array.ledger, array.array_summary["counts"]) == (
        "CANCELLED",
        "settled",
        {"CANCELLED": 2, "COMPLETED": 2},
    )
    assert usage(array).used_cpu_hours == pytest.approx(240 / 3600 * 2)


def test_an_array_from_a_shell_is_charged_task_by_task_as_each_ends(cluster, lin):
    outside = JobRecord.objects.create(
        cluster=cluster, person=lin, posix_user="lin", slurm_job_id=500, origin="outside"
    )
    jobs = listed(raw(501, "COMPLETED", task=0, ran=3600), raw(502, "RUNNING", task=1))
    tracking.apply_array(outside, jobs)
    tracking.apply_array(outside, jobs)
    [charged] = Usage.objects.all()
    assert (charged.job_id, charged.origin, charged.used_cpu_hours) == (501, "outside", 2.0)
    assert outside.tasks.get(array_task_id=0).ledger == "recorded"
    outside.refresh_from_db()
    assert (outside.state, outside.name, outside.is_array) == ("RUNNING", "sweep", True)


def test_an_array_slurm_forgot_is_read_back_from_accounting(array, monkeypatch):
    tracking.apply_array(array, listed(raw(501, "RUNNING", task=0), raw(500, "PENDING", held="1-3%2")))
    runs = [
        accounting.Run(
            job_id=job_id,
            name="sweep",
            partition="cpu",
            state=state,
            exit_code=0,
            exit_signal=None,
            submit_time=datetime.fromtimestamp(T0, UTC),
            start_time=datetime.fromtimestamp(T0 + 10, UTC) if ran else None,
            end_time=datetime.fromtimestamp(T0 + 10 + (ran or 0), UTC),
            elapsed_seconds=ran or 0,
            cpus=2,
            gpus=0,
            nodes="n1" if ran else "",
            working_directory="/home/lin/sweep",
            array_job_id=500,
            array_task_id=task,
            array_task_string=held,
        )
        for job_id, task, state, ran, held in (
            (501, 0, "COMPLETED", 600, ""),
            (502, 1, "COMPLETED", 300, ""),
            (500, None, "CANCELLED", None, "2-3"),
        )
    ]
    monkeypatch.setattr(accounting, "array_runs", lambda cluster, user, array_job_id: runs)
    jobs = tracking.array_from_sacct(array.cluster, "lin", 500)
    tracking.apply_array(array, jobs)
    array.refresh_from_db()
    assert array.array_summary["counts"] == {"CANCELLED": 2, "COMPLETED": 2}
    assert (array.state, array.ledger) == ("CANCELLED", "settled")
    assert usage(array).used_cpu_hours == pytest.approx(900 / 3600 * 2)


def test_sacct_lists_an_arrays_tasks_by_their_own_job_ids():
    answer = {
        "jobs": [
            {"job_id": 501, "array": {"job_id": 500, "task_id": 0}, "state": {"current": "COMPLETED"}},
            {"job_id": 500, "array": {"job_id": 500, "task_id": 3}, "state": {"current": "COMPLETED"}},
            {"job_id": 400, "array": {"job_id": 0, "task_id": 4294967294}, "state": {"current": "COMPLETED"}},
        ]
    }
    runs = accounting.parse_array(json.dumps(answer), 500)
    assert sorted((r.job_id, r.array_task_id) for r in runs) == [(500, 3), (501, 0)]
    # A plain job's runs leave the tasks out; a task asked for by its own id is found.
    assert accounting.parse(json.dumps(answer), 500) == []
    assert [r.array_task_id for r in accounting.parse(json.dumps(answer), 500, array_task=True)] == [3]
    assert [r.job_id for r in accounting.parse(json.dumps(answer), 400)] == [400]


# --- the routes, by the ids Slurm's commands take --------------------------------------------------------


def test_v1_names_an_array_by_its_id_and_a_task_as_array_underscore_index(client, array):
    tracking.apply_array(
        array,
        listed(
            raw(501, "COMPLETED", task=0, ran=60),
            raw(502, "RUNNING", task=1),
            raw(500, "PENDING", held="2-3"),
        ),
    )
    _, token = api_tokens.issue(array.person, name="tests")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    whole = client.get("/v1/clusters/c/jobs/500", **auth).json()["job"]
    assert (whole["job_id"], whole["tasks"]["counts"]) == (
        "500",
        {"COMPLETED": 1, "PENDING": 2, "RUNNING": 1},
    )
    task = client.get("/v1/clusters/c/jobs/500_0", **auth).json()["job"]
    assert (task["job_id"], task["id"], task["array_job_id"], task["array_task_id"]) == ("500_0", 501, 500, 0)
    assert client.get("/v1/clusters/c/jobs/501", **auth).json()["job"]["job_id"] == "500_0"  # its own id
    listed_jobs = client.get("/v1/clusters/c/jobs", **auth).json()["jobs"]
    assert [j["job_id"] for j in listed_jobs] == ["500"]

    waiting = client.get("/v1/clusters/c/jobs/500_3", **auth)
    assert waiting.status_code == 404
    assert waiting.json()["error"]["message"] == (
        "Task 3 of array 500 has not started yet; Slurm still holds it in the array (job 500)."
    )
    missing = client.get("/v1/clusters/c/jobs/500_9", **auth)
    assert (missing.status_code, missing.json()["error"]["message"]) == (404, "You have no job 500_9 on C.")
    ended = client.delete("/v1/clusters/c/jobs/500_0", **auth)
    assert (ended.status_code, ended.json()["error"]["code"]) == (409, "already_finished")
    assert (
        client.get("/v1/clusters/c/jobs/500_x", **auth)
        .json()["error"]["message"]
        .startswith("There is no API route")
    )
    assert client.get("/v1/clusters/c/jobs/99999999999", **auth).status_code == 404


def test_the_pages_show_one_row_per_array_its_tasks_and_each_tasks_page(client, array):
    tracking.apply_array(
        array,
        listed(
            raw(501, "COMPLETED", task=0, ran=60),
            raw(502, "RUNNING", task=1),
            raw(500, "PENDING", held="2-3"),
        ),
    )
    client.force_login(array.person)

    listing = client.get("/clusters/c/jobs/").content.decode()
    assert listing.count('<tr data-job="') == 1
    assert '<tr data-job="500">' in listing
    assert "1 running · 2 pending · 1 done" in listing

    page = client.get("/clusters/c/jobs/500/").content.decode()
    assert "Job array 500" in page
    assert 'href="/clusters/c/jobs/500_0/"' in page
    assert 'href="/clusters/c/jobs/500_1/cancel?back=500"' in page  # a running task can be cancelled alone
    assert 'href="/clusters/c/jobs/500_0/cancel' not in page  # an ended one cannot
    assert 'href="/clusters/c/jobs/500/cancel">Cancel the whole array</a>' in page
    asked = client.get("/clusters/c/jobs/500/cancel").content.decode()
    assert re.search(r"<h1>Cancel job array 500( \([^)]*\))?\?</h1>", asked), asked
    assert (
        "Every task of the array that has not ended stops now (now: 1 running · 2 pending · 1 done)." in asked
    )
    one = client.get("/clusters/c/jobs/500_1/cancel?back=500").content.decode()
    assert "Only task 500_1 stops; the array&#x27;s other tasks go on." in one
    assert '<input type="hidden" name="back" value="500">' in one
    assert 'href="/clusters/c/jobs/500/">Keep it</a>' in one
    assert "Not started yet: tasks <code>2-3</code>" in page

    task = client.get("/clusters/c/jobs/500_0/").content.decode()
    assert "Task 0 of job array" in task
    assert "/home/lin/sweep/out-500_0.txt" in task  # its output, %A and %a expanded
    assert client.get("/clusters/c/jobs/500_x/").status_code == 404
