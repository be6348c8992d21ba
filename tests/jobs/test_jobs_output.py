"""jobs.output: a job's last lines, read as its owner on this host, from the file's end by a seek."""

from __future__ import annotations

import subprocess
import time

import pytest
from django.utils import timezone

from clusters.models import Cluster
from jobs import output
from jobs.models import JobRecord
from tests.support.jobs_support import Person

pytestmark = [pytest.mark.root, pytest.mark.django_db]


@pytest.fixture
def cluster(db) -> Cluster:
    return Cluster.objects.create(
        slug="here",
        name="This host",
        slurmrestd_url="http://127.0.0.1:9",
        jwt_key_ref="/nonexistent",
        has_accounting=False,
    )


def as_owner(owner: Person, script: str, *args: str) -> None:
    subprocess.run(["runuser", "-u", owner.name, "--", "sh", "-c", script, "sh", *args], check=True)


def running_job(cluster: Cluster, owner: Person, path: str) -> JobRecord:
    return JobRecord.objects.create(
        cluster=cluster,
        person=owner.user,
        posix_user=owner.name,
        slurm_job_id=4242,
        state="RUNNING",
        start_time=timezone.now(),
        stdout_path=path,
        stderr_path=path,
    )


def test_the_last_line_of_a_10_tb_sparse_file_comes_back_at_once(cluster, owner):
    path = str(owner.home / "huge.out")
    # Ten terabytes of zeros (no newline among them) then one line: sparse, so nothing is written.
    as_owner(owner, 'truncate -s 10T -- "$1" && printf "\\nthe last line\\n" >> "$1"', path)
    job = running_job(cluster, owner, path)

    started = time.monotonic()
    out = output.tail(job, "stdout")
    seconds = time.monotonic() - started

    assert out.error == ""
    assert out.lines[-1] == "the last line"
    assert out.truncated
    assert len(out.text.encode()) == output.MAX_BYTES
    assert seconds < 2, f"{seconds:.1f} s"
    print(f"sparse output: the last line of a 10 TB file read in {seconds:.2f} s")


def test_it_keeps_the_last_lines_within_the_byte_bound(cluster, owner):
    path = str(owner.home / "long.out")
    # 3,000 lines of 200 bytes: 600 kB, more than one answer may carry.
    as_owner(owner, 'for i in $(seq 3000); do printf "%0199d\\n" "$i"; done > "$1"', path)
    job = running_job(cluster, owner, path)

    few = output.tail(job, "stdout", lines=3)
    assert few.lines == [f"{n:0199d}" for n in (2998, 2999, 3000)]
    assert not few.truncated
    many = output.tail(job, "stdout", lines=2000)
    assert many.truncated
    assert len(many.text.encode()) <= output.MAX_BYTES
    assert many.lines[-1] == f"{3000:0199d}"


def test_a_missing_file_and_a_folder_are_said_so(cluster, owner):
    missing = output.tail(running_job(cluster, owner, str(owner.home / "nope.out")), "stdout")
    assert missing.error == f"{owner.home}/nope.out does not exist."
    folder = output.tail(running_job(cluster, owner, str(owner.home)), "stdout")
    assert folder.error == "not a regular file"


def test_a_file_the_owner_may_not_read_says_so_and_shows_nothing(cluster, owner):
    path = str(owner.home / "locked.out")
    as_owner(owner, 'echo private > "$1" && chmod 000 "$1"', path)
    out = output.tail(running_job(cluster, owner, path), "stdout")
    assert out.text == ""
    assert out.error == f"{owner.name} may not read {path} (Permission denied)."
