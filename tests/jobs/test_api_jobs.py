"""/v1 job routes against the real Slurm: submit as the mapped person, follow it, read its output, cancel.

Every test runs on Slurm 22.05, 24.11 and 26.05 (tests/conftest.py, `every_release`).
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from access.models import Usage
from audit.models import AuditEvent
from clusters.models import Cluster
from jobs.models import JobRecord
from tests.support import slurm_commands
from tests.support.jobs_support import HELLO, SlurmWatch, assert_matches, squeue, sync_until

pytestmark = [pytest.mark.slurm, pytest.mark.root, pytest.mark.django_db, pytest.mark.every_release]


def post(client, person, body, *, query="", **headers):
    return client.post(
        f"/v1/clusters/demo/jobs{query}",
        json.dumps(body),
        content_type="application/json",
        **person.auth,
        **headers,
    )


def test_a_script_runs_as_its_owner_with_its_directives_and_its_output_is_readable(client, ada):
    path = ada.script("hello.sh", HELLO)

    r = post(client, ada, {"script_path": path})

    assert r.status_code == 201, r.content
    body = r.json()
    assert_matches("SubmitResult", body)
    job_id = body["job"]["id"]
    assert body["decision"]["allowed"] is True
    assert body["job"]["user"] == ada.name
    assert body["final_job"]["partition"] == "debug"
    assert body["final_job"]["sources"]["partition"] == "script line 4"
    assert body["final_job"]["time_limit"] == 2
    assert body["final_job"]["name"] == "ct-hello"
    assert body["final_job"]["working_directory"] == str(ada.home)
    assert r["Location"] == f"/v1/clusters/demo/jobs/{job_id}"
    record = JobRecord.objects.get(slurm_job_id=job_id, cluster__slug="demo")
    assert (record.person, record.posix_user, record.origin) == (ada.user, ada.name, "console")
    assert record.reservation_id is not None
    assert Usage.objects.get(pk=record.reservation_id).job_id == job_id
    assert AuditEvent.objects.filter(action="job.submit", outcome="allowed", target=f"job {job_id}").exists()

    record = sync_until(record, {"COMPLETED", "FAILED"})
    assert record.state == "COMPLETED"
    assert record.exit_code == 0
    assert record.partition == "debug"
    usage = Usage.objects.get(pk=record.reservation_id)
    assert usage.state == Usage.State.SETTLED
    assert usage.elapsed_seconds is not None

    r = client.get(f"/v1/clusters/demo/jobs/{job_id}/output", **ada.auth)
    assert r.status_code == 200, r.content
    out = r.json()
    assert_matches("JobOutput", out)
    assert out["stdout"]["path"] == f"{ada.home}/slurm-{job_id}.out"
    assert f"hello from {ada.name}" in out["stdout"]["text"]
    assert "oops" in out["stdout"]["text"]  # stderr shares the file unless the script says otherwise
    assert out["stderr"]["same_as_stdout"] is True

    r = client.get(f"/v1/clusters/demo/jobs/{job_id}", **ada.auth)
    assert_matches("JobDetail", r.json())
    assert r.json()["job"]["state"] == "COMPLETED"
    listed = client.get("/v1/clusters/demo/jobs?state=completed", **ada.auth).json()
    assert_matches("JobList", listed)
    assert [j["id"] for j in listed["jobs"]] == [job_id]


def test_the_request_wins_over_the_script_and_separate_error_files_are_read(client, ada):
    path = ada.script(
        "both.sh",
        "#!/bin/sh\n#SBATCH -p debug\n#SBATCH -t 5\n#SBATCH -o out-%j.txt\n#SBATCH -e err-%j.txt\n"
        "echo out; echo err >&2\n",
    )
    r = post(
        client, ada, {"script_path": path, "partition": "cpu", "time_limit": "0:3:00", "name": "override"}
    )
    assert r.status_code == 201, r.content
    final = r.json()["final_job"]
    assert (final["partition"], final["time_limit"], final["name"]) == ("cpu", 3, "override")
    assert final["sources"] == final["sources"] | {
        "partition": "request",
        "time_limit": "request",
        "name": "request",
    }
    record = sync_until(JobRecord.objects.get(slurm_job_id=r.json()["job"]["id"]), {"COMPLETED", "FAILED"})
    assert (record.partition, record.time_limit, record.name) == ("cpu", 3, "override")
    out = client.get(f"/v1/clusters/demo/jobs/{record.slurm_job_id}/output", **ada.auth).json()
    assert out["stdout"]["text"] == "out\n"
    assert out["stderr"]["text"] == "err\n"
    assert out["stderr"]["path"] == f"{ada.home}/err-{record.slurm_job_id}.txt"


def test_a_retried_post_with_the_same_idempotency_key_queues_once(client, ada):
    path = ada.script("slow.sh", "#!/bin/sh\n#SBATCH -p debug -t 1\nsleep 30\n")

    first = post(client, ada, {"script_path": path}, HTTP_IDEMPOTENCY_KEY="key-1")
    again = post(client, ada, {"script_path": path}, HTTP_IDEMPOTENCY_KEY="key-1")

    assert first.status_code == 201, first.content
    assert again.status_code == 200, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["replayed"] is True
    assert_matches("SubmitResult", again.json())
    assert again.json()["job"]["id"] == first.json()["job"]["id"]
    assert squeue(ada.name) == [str(first.json()["job"]["id"])]
    assert JobRecord.objects.filter(person=ada.user).count() == 1
    other = post(client, ada, {"script_path": path, "name": "different"}, HTTP_IDEMPOTENCY_KEY="key-1")
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert squeue(ada.name) == [str(first.json()["job"]["id"])]


def test_a_dry_run_decides_and_shows_the_final_job_without_queueing(client, ada):
    path = ada.script("dry.sh", "#!/bin/sh\n#SBATCH --gres=gpu:2\n#SBATCH -t 30\nnvidia-smi\n")
    watch = SlurmWatch(ada)

    r = post(client, ada, {"script_path": path, "partition": "gpu"}, query="?dry_run=1")

    assert r.status_code == 200, r.content
    body = r.json()
    assert_matches("SubmitResult", body)
    assert body["dry_run"] is True
    assert "job" not in body
    assert body["final_job"]["gpus"] == 2
    assert body["cost"] == {"gpu_hours": 1.0, "cpu_hours": 0.5}
    assert body["directives"] == [
        {"line": 2, "option": "gres", "value": "gpu:2"},
        {"line": 3, "option": "time", "value": "30"},
    ]
    assert watch.new_jobs() == set()
    assert not JobRecord.objects.filter(person=ada.user).exists()
    assert not Usage.objects.filter(user=ada.user).exists()


def test_a_denied_submit_never_reaches_slurm_and_carries_the_decisions_sentence(client, people):
    broke = people(quota={"gpu_hours": 1.0, "period": "month"})
    path = broke.script("big.sh", "#!/bin/sh\n#SBATCH -p gpu --gpus=2 -t 120\nsleep 1\n")
    watch = SlurmWatch(broke)

    r = post(client, broke, {"script_path": path})

    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "gpu_budget"
    assert error["message"].startswith(
        "This job asks for 4.0 GPU-hours; you have 1.0 of 1.0 left this month, renewing on "
    )
    assert watch.new_jobs() == set()
    assert not JobRecord.objects.filter(person=broke.user).exists()
    assert not Usage.objects.filter(user=broke.user).exists()
    denied = AuditEvent.objects.get(action="job.submit", actor=broke.user)
    assert (denied.outcome, denied.reason, denied.message) == ("denied", "gpu_budget", error["message"])


def test_someone_without_a_grant_is_refused_before_anything_is_read_or_queued(client, people):
    stranger = people(grant=False)
    path = stranger.script("x.sh", "#!/bin/sh\nhostname\n")
    watch = SlurmWatch(stranger)

    r = post(client, stranger, {"script_path": path})

    assert r.status_code == 403
    assert r.json()["error"] == {
        "code": "no_grant",
        "message": "You have no access to Demo cluster; ask an administrator for a grant.",
    }
    assert watch.new_jobs() == set()


def test_a_script_the_person_cannot_read_is_refused_without_queueing(client, people):
    ada, bob = people(), people()
    secret = bob.script("secret.sh", "#!/bin/sh\necho mine\n", mode=0o600)
    # Put it where ada's own permissions are what decides: her home, but owned by bob.
    theirs = ada.script("not-mine.sh", "#!/bin/sh\necho mine\n", mode=0o600, owner=bob.uid)
    watch = SlurmWatch(ada)

    for path in (secret, theirs):
        r = post(client, ada, {"script_path": path})
        assert r.status_code == 403, r.content
        assert r.json()["error"]["code"] == "script_unreadable"
        assert "Permission denied" in r.json()["error"]["message"]
    assert watch.new_jobs() == set()
    assert not JobRecord.objects.exists()


def test_slurmrestd_not_answering_is_a_502_that_releases_the_reservation(
    client, ada, demo_cluster, monkeypatch
):
    from clusters import partitions

    known = partitions.partitions(demo_cluster)
    # The partition list is read before the submit; keep that answer, then make the submit itself fail.
    monkeypatch.setattr(partitions, "partitions", lambda cluster: known)
    demo_cluster.slurmrestd_url = "http://127.0.0.1:9"
    demo_cluster.save()
    path = ada.script("lost.sh", "#!/bin/sh\n#SBATCH -p debug -t 5\nhostname\n")

    r = post(client, ada, {"script_path": path}, HTTP_IDEMPOTENCY_KEY="retry-me")

    assert r.status_code == 502, r.content
    error = r.json()["error"]
    assert error["code"] == "cluster_unavailable"
    assert "did not answer the submit" in error["message"]
    assert "reservation was released" in error["message"]
    assert not JobRecord.objects.exists()  # no half-written record: the claim was removed
    usage = Usage.objects.get(user=ada.user)
    assert usage.state == Usage.State.RELEASED
    assert AuditEvent.objects.filter(
        action="job.submit", outcome="error", reason="cluster_unavailable"
    ).exists()
    assert squeue(ada.name) == []


def test_cancel_own_job_releases_its_reservation(client, ada):
    path = ada.script("long.sh", "#!/bin/sh\n#SBATCH -p debug -t 5\nsleep 60\n")
    job_id = post(client, ada, {"script_path": path}).json()["job"]["id"]

    r = client.delete(f"/v1/clusters/demo/jobs/{job_id}", **ada.auth)

    assert r.status_code == 200, r.content
    assert_matches("CancelResult", r.json())
    assert r.json()["message"] == f"Job {job_id} was cancelled."
    deadline = time.monotonic() + 15
    while str(job_id) in squeue(ada.name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert str(job_id) not in squeue(ada.name)
    record = sync_until(JobRecord.objects.get(slurm_job_id=job_id), {"CANCELLED"})
    usage = Usage.objects.get(pk=record.reservation_id)
    assert usage.state in (Usage.State.RELEASED, Usage.State.SETTLED)
    assert AuditEvent.objects.filter(action="job.cancel", outcome="allowed", target=f"job {job_id}").exists()
    again = client.delete(f"/v1/clusters/demo/jobs/{job_id}", **ada.auth)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_finished"


def test_someone_elses_job_answers_like_a_missing_one(client, people):
    ada, bob = people(), people()
    path = ada.script("mine.sh", "#!/bin/sh\n#SBATCH -p debug -t 5\nsleep 60\n")
    job_id = post(client, ada, {"script_path": path}).json()["job"]["id"]

    missing = client.get("/v1/clusters/demo/jobs/99999999", **bob.auth)
    for response in (
        client.get(f"/v1/clusters/demo/jobs/{job_id}", **bob.auth),
        client.get(f"/v1/clusters/demo/jobs/{job_id}/output", **bob.auth),
        client.delete(f"/v1/clusters/demo/jobs/{job_id}", **bob.auth),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"You have no job {job_id} on Demo cluster."
    assert missing.status_code == 404
    assert str(job_id) in squeue(ada.name)
    assert client.get("/v1/clusters/demo/jobs", **bob.auth).json()["total"] == 0


# --- paging ------------------------------------------------------------------------------------------


def records_of(person, count: int) -> None:
    """Finished jobs in the database only, with ids Slurm never hands out (its MaxJobId < 67,108,864)."""
    cluster = Cluster.objects.get(slug="demo")
    JobRecord.objects.bulk_create(
        JobRecord(
            cluster=cluster,
            person=person.user,
            posix_user=person.name,
            slurm_job_id=90_000_000 + i,
            name=f"old-{i}",
            partition="debug",
            state="COMPLETED",
        )
        for i in range(count)
    )


def test_a_page_past_the_last_answers_with_the_last_page(client, ada):
    records_of(ada, 120)
    # 4,301 digits and more are past what int() reads at all: still just "past the end".
    for raw in ("3", "4", "1000000", "9" * 30, "9" * 5000):
        r = client.get("/v1/clusters/demo/jobs", {"page": raw}, **ada.auth)
        assert r.status_code == 200, raw[:20]
        body = r.json()
        assert (body["page"], body["pages"], body["total"], len(body["jobs"])) == (3, 3, 120, 20)
        assert body["jobs"][-1]["id"] == 90_000_000


def test_a_page_or_size_that_is_not_a_whole_number_from_one_is_a_400_that_says_so(client, ada):
    # "²" and "\u0661" (an Arabic-Indic one) pass str.isdigit(); "²" then failed int(), a 500.
    for name in ("page", "per_page"):
        for raw in ("abc", "0", "-2", "1.5", " 2", "²", "\u0661", "9" * 5000 + "x"):
            r = client.get("/v1/clusters/demo/jobs", {name: raw}, **ada.auth)
            assert r.status_code == 400, (name, raw[:20])
            error = r.json()["error"]
            assert error["code"] == "invalid_request"
            assert error["message"].startswith(f"{name} must be a positive whole number, not ")
            assert len(error["message"]) < 120  # a long value is cut short, not echoed whole
    huge = client.get("/v1/clusters/demo/jobs", {"per_page": "9" * 5000}, **ada.auth)
    assert huge.status_code == 200
    assert huge.json()["per_page"] == 200


SWEEP = """#!/bin/bash
#SBATCH --job-name=ct-inline
#SBATCH --partition=debug --time=3
#SBATCH --ntasks-per-node=2 --mem-per-cpu=100M
#SBATCH --comment=sweep-3 --mail-type=END,FAIL --begin=now+1hour
hostname
"""


def scontrol(job_id: int) -> dict[str, str]:
    out = subprocess.run(
        [slurm_commands.command("scontrol"), "-o", "show", "job", str(job_id)], capture_output=True, text=True
    ).stdout
    return dict(word.split("=", 1) for word in out.split() if "=" in word)


def test_inline_and_path_submits_give_the_same_decision_final_job_and_slurm_record(client, ada):
    path = ada.script("sweep.sh", SWEEP)
    answers = [
        post(client, ada, {"script_path": path, "options": {"hold": True}}),
        post(client, ada, {"script": SWEEP, "options": {"hold": True}}),
    ]
    try:
        assert [r.status_code for r in answers] == [201, 201], [r.content for r in answers]
        by_path, inline = (r.json() for r in answers)
        assert by_path["decision"] == inline["decision"]
        assert by_path["cost"] == inline["cost"]
        assert by_path["final_job"]["script_path"] == path
        assert inline["final_job"]["script_path"] == ""
        same = {k: v for k, v in by_path["final_job"].items() if k != "script_path"}
        assert same == {k: v for k, v in inline["final_job"].items() if k != "script_path"}
        assert same["options"]["hold"] is True
        assert (same["cpus"], same["memory_mb_total"]) == (2, 200)
        assert same["sources"]["priced_cpus"] == (
            "--ntasks (= nodes x --ntasks-per-node, script line 4) x --cpus-per-task"
        )
        records = [scontrol(r["job"]["id"]) for r in (by_path, inline)]
        for field in (
            "JobName",
            "Partition",
            "TimeLimit",
            "NumTasks",
            "NumCPUs",
            "MinMemoryCPU",
            "WorkDir",
            "Comment",
            "MailType",
            "Priority",
            "Requeue",
        ):
            assert records[0][field] == records[1][field], field
        # The person's --comment is kept; the console's tag did not take its place.
        assert records[0]["Comment"] == "sweep-3"
        assert records[0]["Priority"] == "0"  # held, as asked in options
        rows = {r.slurm_job_id: r for r in JobRecord.objects.filter(person=ada.user)}
        a, b = rows[by_path["job"]["id"]], rows[inline["job"]["id"]]
        assert (a.partition, a.cpus, a.time_limit, a.working_directory) == (
            b.partition,
            b.cpus,
            b.time_limit,
            b.working_directory,
        )
        assert (a.script_path, b.script_path) == (path, "")
    finally:
        for r in answers:
            if r.status_code == 201:
                subprocess.run([slurm_commands.command("scancel"), str(r.json()["job"]["id"])], check=False)


# Options sbatch takes that a release's slurmrestd cannot carry (clusters/slurm/v0038.py, v0040.py), and the
# start of the console's refusal. 22.05's REST parser refuses --signal's B: prefix; v0.0.41 … v0.0.44 have
# no field for --cores-per-socket (24.11 speaks v0.0.42); 26.05's v0.0.45 carries both.
NOT_CARRIED = {
    "22.05": {"--signal=B:USR1@60": "slurmrestd v0.0.38 cannot send --signal=B:USR1@60"},
    "24.11": {"--cores-per-socket=1": "slurmrestd v0.0.42 has no field for --cores-per-socket"},
    "26.05": {},
}
CARRIED_OR_NOT = ("--signal=B:USR1@60", "--cores-per-socket=1")


@pytest.mark.parametrize("option", CARRIED_OR_NOT)
def test_an_option_the_rest_api_cannot_carry_is_refused_naming_the_line(client, ada, slurm_release, option):
    path = ada.script("option.sh", f"#!/bin/sh\n#SBATCH -p debug -t 2\n#SBATCH {option}\nhostname\n")
    watch = SlurmWatch(ada)
    r = post(client, ada, {"script_path": path, "options": {"hold": True}})
    refusal = NOT_CARRIED[slurm_release].get(option)
    if refusal is None:
        # This release carries it: Slurm holds the job, nothing was refused.
        assert r.status_code == 201, r.content
        job_id = r.json()["job"]["id"]
        try:
            assert watch.new_jobs() == {str(job_id)}
        finally:
            subprocess.run([slurm_commands.command("scancel"), str(job_id)], check=False)
        return
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "option_unsupported"
    assert error["message"].startswith(f"{path}, line 3: {refusal}")
    if option.startswith("--signal"):
        assert "write --signal=USR1@60" in error["message"]
    assert watch.new_jobs() == set()
    assert not Usage.objects.filter(user=ada.user).exists()
