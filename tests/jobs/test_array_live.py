"""A job array on the real Slurm: submitted, its tasks run and are listed under one row, one is cancelled
through /v1 by its `123_4` id, and its output is read with %A/%a expanded. On Slurm 22.05, 24.11 and 26.05."""

from __future__ import annotations

import io
import json
import subprocess
import time

import pytest
from django.core.management import call_command

from access.models import Usage
from audit.models import AuditEvent
from jobs.models import JobRecord
from tests.support import slurm_commands
from tests.support.jobs_support import assert_matches, squeue, sync_until

pytestmark = [pytest.mark.slurm, pytest.mark.root, pytest.mark.django_db, pytest.mark.every_release]

# Four tiny tasks, two at a time; task 3 waits long enough to be cancelled while it runs or waits.
SWEEP = (
    "#!/bin/bash\n#SBATCH --job-name=ct-sweep\n#SBATCH --partition=debug\n#SBATCH --time=2\n"
    "#SBATCH --array=0-3%2\n#SBATCH --output=sweep-%A_%a.out\n"
    'echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"\n'
    'if [ "$SLURM_ARRAY_TASK_ID" = 3 ]; then sleep 120; else sleep 1; fi\n'
)


def submit_array(client, person, path: str) -> tuple[int, str]:
    """The array's job id, queued through the console's /v1 submit."""
    r = client.post(
        "/v1/clusters/demo/jobs",
        json.dumps({"script_path": path}),
        content_type="application/json",
        **person.auth,
    )
    assert r.status_code == 201, r.content
    return r.json()["job"]["id"], "console"


def wait_for_task(record: JobRecord, task_id: int, seconds: float = 30) -> None:
    """Run the sync loop until the array's task `task_id` has started (bounded)."""
    deadline = time.monotonic() + seconds
    while not record.tasks.filter(array_task_id=task_id, start_time__isnull=False).exists():
        assert time.monotonic() < deadline, f"task {task_id} of {record.slurm_job_id} never started"
        call_command("sync_jobs", "--once", stdout=io.StringIO())
        time.sleep(0.3)


def test_an_arrays_tasks_run_are_listed_under_it_and_one_is_cancelled_through_v1(client, ada):
    path = ada.script("sweep.sh", SWEEP)
    array_id, origin = submit_array(client, ada, path)
    try:
        record = sync_until(
            JobRecord.objects.get(cluster__slug="demo", slurm_job_id=array_id, array_parent__isnull=True),
            {"PENDING", "RUNNING"},
        )
        assert record.origin == origin
        wait_for_task(record, 3)

        # The list: one row for the array, its tasks counted by state, none of them a row of its own.
        listed = client.get("/v1/clusters/demo/jobs", **ada.auth).json()
        assert_matches("JobList", listed)
        [row] = [j for j in listed["jobs"] if j["array_job_id"] == array_id]
        assert [j["id"] for j in listed["jobs"]].count(array_id) == 1
        assert row["tasks"]["total"] == 4
        assert "running" in row["tasks"]["summary"]

        # Cancel task 3 only, by the id Slurm's own commands take.
        r = client.delete(f"/v1/clusters/demo/jobs/{array_id}_3", **ada.auth)
        assert r.status_code == 200, r.content
        assert_matches("CancelResult", r.json())
        assert r.json()["job"]["job_id"] == f"{array_id}_3"
        assert AuditEvent.objects.filter(
            action="job.cancel", target=f"job {array_id}_3", outcome="allowed"
        ).exists()

        record = sync_until(record, {"COMPLETED", "CANCELLED", "FAILED"}, seconds=60)
        assert record.state == "CANCELLED"
        assert record.array_summary["counts"] == {"CANCELLED": 1, "COMPLETED": 3}
        assert sorted(record.tasks.values_list("array_task_id", flat=True)) == [0, 1, 2, 3]

        task = client.get(f"/v1/clusters/demo/jobs/{array_id}_0", **ada.auth).json()
        assert_matches("JobDetail", task)
        assert (task["job"]["state"], task["job"]["array_task_id"]) == ("COMPLETED", 0)
        out = client.get(f"/v1/clusters/demo/jobs/{array_id}_0/output", **ada.auth).json()
        assert out["stdout"]["path"] == f"{ada.home}/sweep-{array_id}_0.out"
        assert out["stdout"]["text"] == f"task 0 of {array_id}\n"
        whole = client.get(f"/v1/clusters/demo/jobs/{array_id}/output", **ada.auth)
        assert (whole.status_code, whole.json()["error"]["code"]) == (400, "array_output")

        # Nothing leaked, nothing charged twice: one settled entry for the console's array, or one per
        # task that ran for an array from a shell.
        if origin == "console":
            entry = Usage.objects.get(pk=record.reservation_id)
            assert (entry.state, entry.tasks, record.ledger) == ("settled", 4, "settled")
        else:
            charged = Usage.objects.filter(cluster__slug="demo", user=ada.user)
            assert charged.count() == record.tasks.filter(start_time__isnull=False).count()
            assert set(charged.values_list("state", flat=True)) == {"settled"}
    finally:
        subprocess.run([slurm_commands.command("scancel"), str(array_id)], check=False)
        deadline = time.monotonic() + 15
        while squeue(ada.name) and time.monotonic() < deadline:
            time.sleep(0.2)
