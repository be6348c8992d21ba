"""Row 2, queue: the job list page and GET /v1/clusters/demo/jobs with a big queue, against one raw GET /jobs.

The queue is real: `jobs` held jobs of the bench person wait in Slurm (10,000 in full mode),
submitted straight to slurmrestd a few at a time because through the console it would take
many minutes. The console learns of jobs it did not submit through its sync loop, exactly as
it does in production, so one sync round (timed, reported beside the row) brings them in;
then the list is read from the console's own records. Everything is cancelled at the end.
"""

from __future__ import annotations

import time

import requests

from bench.raw_slurm import RawSlurm, cancel, job_body
from bench.stats import Measurement, Row, Series, Target

TARGET = Target("ratio", 1.0)


def run(
    base_url: str,
    api_token: str,
    session_cookie: str,
    person_email: str,
    script_text: str,
    workdir: str,
    raw: RawSlurm,
    *,
    jobs: int,
    rounds: int,
    per_round: int,
    submitted: list[int],
) -> Row:
    from django.db import connection

    from accounts.models import ClusterAccount
    from jobs.models import JobRecord
    from jobs.sync_cluster import sync_account
    from jobs.tracking import Report

    info: dict[str, object] = {"queued_jobs": jobs}
    started = time.perf_counter()
    ids = raw.submit_many(job_body(script_text, name="queued", workdir=workdir, hold=True), jobs)
    submitted.extend(ids)
    info["submit_seconds"] = round(time.perf_counter() - started, 2)
    # One sync round for the person on this cluster (sync_once would also poll the SSM registry row,
    # which the bench points at the same slurmrestd, and adopt every job twice).
    account = ClusterAccount.objects.select_related("account__user", "cluster").get(
        cluster__slug="demo", account__user__email=person_email
    )
    report = Report()
    started = time.perf_counter()
    sync_account(account, report)
    info["sync_round_seconds"] = round(time.perf_counter() - started, 2)
    info["sync_report"] = report.summary()
    info["records_in_console"] = JobRecord.objects.filter(slurm_job_id__in=ids).count()
    with connection.cursor() as cursor:
        # Statistics as autovacuum leaves them a minute after ten thousand inserts: a steady-state queue.
        cursor.execute("ANALYZE jobs_jobrecord")

    api = requests.Session()
    api.trust_env = False
    api.headers["Authorization"] = f"Bearer {api_token}"
    page = requests.Session()
    page.trust_env = False
    page.headers["Cookie"] = f"sessionid={session_cookie}"
    page_series, api_series = Series("GET /clusters/demo/jobs/"), Series("GET /v1/clusters/demo/jobs")
    floor = Series("raw GET /jobs (all)")
    listed = 0

    def timed(session: requests.Session, url: str) -> float:
        begun = time.perf_counter()
        response = session.get(url, timeout=60)
        body = response.content
        elapsed = time.perf_counter() - begun
        if response.status_code != 200 or not body:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")
        return elapsed

    try:
        # One request of each first, so no side pays for its first connection or a cold cache.
        timed(page, f"{base_url}/clusters/demo/jobs/")
        timed(api, f"{base_url}/v1/clusters/demo/jobs")
        for _ in range(rounds):
            begun = time.perf_counter()
            listed, size = raw.jobs()
            floor.samples.append(time.perf_counter() - begun)
            info["raw_bytes"] = size
            for _ in range(per_round):
                page_series.samples.append(timed(page, f"{base_url}/clusters/demo/jobs/"))
                api_series.samples.append(timed(api, f"{base_url}/v1/clusters/demo/jobs"))
        total = api.get(f"{base_url}/v1/clusters/demo/jobs", timeout=60).json().get("total")
    finally:
        api.close()
        page.close()
        # At once: ten thousand pending jobs keep slurmctld's scheduler busy during the rows that follow.
        cancel(ids)
        # And the console forgets them, so a repeat of this row (a full run repeats a disturbed row)
        # lists the same number of jobs rather than twice as many.
        JobRecord.objects.filter(cluster__slug="demo", slurm_job_id__in=ids).delete()
    info["jobs_in_raw_listing"] = listed
    info["total_in_console_listing"] = total
    row = Row(2, "queue")
    row.measurements = [
        Measurement("2a", f"job list page, {jobs:,} jobs queued", page_series, floor, TARGET),
        Measurement("2b", f"GET /v1/.../jobs, {jobs:,} jobs queued", api_series, floor, TARGET),
    ]
    row.info = info
    return row
