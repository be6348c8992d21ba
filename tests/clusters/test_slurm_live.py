"""The slurmrestd client against each real Slurm release of scripts/slurm-up.sh: jobs run as their user.

Every test runs on 22.05 (v0.0.38), 24.11 (v0.0.42) and 26.05 (v0.0.45); where the releases answer
differently the adapter handles it in clusters/slurm/, and the test says which release does what.
"""

from __future__ import annotations

import os
import pwd
import time
import uuid
from pathlib import Path

import pytest

from clusters.slurm import (
    Job,
    JobSpec,
    SlurmAuthError,
    SlurmClient,
    SlurmNotFound,
    SlurmPermissionDenied,
    SlurmRejected,
    forget_api_version,
)

pytestmark = [pytest.mark.slurm, pytest.mark.every_release]
# What each release's slurmrestd offers at most: the version the client must pick.
NEWEST = {"22.05": "v0.0.38", "24.11": "v0.0.42", "26.05": "v0.0.45"}

ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
WAIT_SECONDS = 30


def wait_for(client: SlurmClient, job_id: int, *states: str) -> Job:
    """Poll until the job reaches one of `states` (or any final state when none is named)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        job = client.job(job_id)
        if (job.state in states) if states else job.is_finished:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {job.state} ({job.state_reason}) after {WAIT_SECONDS} s")
        time.sleep(0.2)


def output_path(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir) / f".clusterra-test-{uuid.uuid4().hex}.out"


def sleeper(*, time_limit: int = 10, **fields) -> JobSpec:
    return JobSpec("#!/bin/sh\nsleep 300\n", "/tmp", ENVIRONMENT, time_limit=time_limit, **fields)


def test_it_detects_the_newest_version_and_the_controller_is_up(slurm, slurm_release, as_user):
    forget_api_version(slurm.url)
    client = as_user("alice")
    assert client.api_version == NEWEST[slurm_release] == slurm.api_version
    info = client.info()
    assert info.api_version == NEWEST[slurm_release]
    assert info.slurm_release.startswith(slurm_release)
    assert info.is_up


def test_partitions_are_cpu_gpu_and_a_30_minute_debug(as_user, slurm_release):
    partitions = {p.name: p for p in as_user("alice").partitions()}
    assert {"cpu", "gpu", "debug"} <= set(partitions)
    cpu, gpu, debug = partitions["cpu"], partitions["gpu"], partitions["debug"]
    # v0.0.40 … v0.0.44 do not say which partition is the default (types.Partition); v0.0.38 and v0.0.45 do.
    says_default = slurm_release != "24.11"
    assert (cpu.is_default, cpu.max_time_limit, cpu.state) == (True if says_default else None, None, "UP")
    assert (gpu.is_default, gpu.gpus) == (False if says_default else None, 2)
    assert (debug.is_default, debug.max_time_limit, debug.default_time_limit) == (
        False if says_default else None,
        30,
        10,
    )


def test_the_node_has_two_gpus(as_user):
    nodes = as_user("alice").nodes()
    node = next(n for n in nodes if "gpu" in n.partitions)
    assert node.gpus == 2
    assert node.cpus
    assert node.real_memory
    assert node.state in {"IDLE", "MIXED", "ALLOCATED"}


def test_a_job_runs_as_the_user_who_submitted_it(as_user, cleanup):
    alice = as_user("alice")
    out = output_path("alice")
    spec = JobSpec(
        script=f"#!/bin/sh\nid -u -n > {out}\n",
        working_directory=str(out.parent),
        environment=ENVIRONMENT,
        name="clusterra-whoami",
        time_limit=2,
        standard_output="/dev/null",
    )
    try:
        result = alice.submit(spec)
        cleanup("alice", result.job_id)
        assert result.warnings == ()
        listed = {j.job_id: j for j in alice.jobs().jobs}
        assert listed[result.job_id].name == "clusterra-whoami"
        assert listed[result.job_id].user_name == "alice"
        job = wait_for(alice, result.job_id)
        assert (job.state, job.exit_code, job.exit_signal) == ("COMPLETED", 0, None)
        assert job.working_directory == str(out.parent)
        assert out.read_text().strip() == "alice"
        assert out.stat().st_uid == pwd.getpwnam("alice").pw_uid
    finally:
        out.unlink(missing_ok=True)


def test_an_exit_status_comes_back_decoded(as_user, cleanup):
    alice = as_user("alice")
    result = alice.submit(
        JobSpec("#!/bin/sh\nexit 3\n", "/tmp", ENVIRONMENT, time_limit=1, standard_output="/dev/null")
    )
    cleanup("alice", result.job_id)
    job = wait_for(alice, result.job_id)
    assert (job.state, job.exit_code, job.exit_signal) == ("FAILED", 3, None)


def test_an_unchanged_queue_is_not_modified(as_user):
    listing = as_user("alice").jobs(update_time=int(time.time()) + 3600)
    assert listing.not_modified
    assert listing.jobs == ()


def test_a_cancelled_job_ends_cancelled_and_a_second_cancel_is_fine(as_user, cleanup):
    alice = as_user("alice")
    job_id = cleanup("alice", alice.submit(sleeper(name="clusterra-sleep")).job_id)
    alice.cancel(job_id)
    job = wait_for(alice, job_id, "CANCELLED")
    assert job.exit_code is None
    alice.cancel(job_id)


def test_an_expired_token_is_an_auth_error(slurm, slurm_release, as_user, mint):
    expired = as_user("alice", token=mint("alice", lifetime=-60), api_version=slurm.api_version)
    # 22.05's slurmrestd checks the token itself and says why; from 24.11 slurmctld refuses it, and a
    # ping answers 200 with the controller not responding, which the adapter turns into the same error.
    with pytest.raises(SlurmAuthError, match="expired" if slurm_release == "22.05" else "authentication"):
        expired.info()
    with pytest.raises(SlurmAuthError):
        expired.jobs()
    with pytest.raises(SlurmAuthError):
        expired.submit(JobSpec("#!/bin/sh\ntrue\n", "/tmp", ENVIRONMENT))


def test_a_token_signed_with_another_key_is_an_auth_error(slurm, as_user, mint):
    forged = as_user("alice", token=mint("alice", signing_key=os.urandom(32)), api_version=slurm.api_version)
    with pytest.raises(SlurmAuthError):
        forged.partitions()
    with pytest.raises(SlurmAuthError):
        forged.cancel(1)


def test_bob_cannot_cancel_or_see_alices_job(as_user, cleanup):
    alice, bob = as_user("alice"), as_user("bob")
    job_id = cleanup("alice", alice.submit(sleeper()).job_id)
    with pytest.raises(SlurmPermissionDenied, match="Access/permission denied") as caught:
        bob.cancel(job_id)
    assert 2002 in caught.value.codes
    # PrivateData=jobs: to bob, alice's job does not exist.
    with pytest.raises(SlurmNotFound):
        bob.job(job_id)
    assert job_id not in {j.job_id for j in bob.jobs().jobs}
    assert alice.job(job_id).state in {"PENDING", "RUNNING"}


def test_a_nonexistent_partition_is_rejected(as_user):
    with pytest.raises(SlurmRejected, match="Invalid partition name specified"):
        as_user("alice").submit(sleeper(partition="no-such-partition"))


def test_a_nonexistent_job_is_not_found(as_user):
    alice = as_user("alice")
    with pytest.raises(SlurmNotFound, match="Invalid job id specified"):
        alice.job(99_999_999)
    with pytest.raises(SlurmNotFound):
        alice.cancel(99_999_999)


def test_a_time_limit_over_the_partition_maximum_queues_and_says_why(as_user, cleanup, slurm_release):
    alice = as_user("alice")
    # debug allows 30 minutes: Slurm queues the job anyway (it stays pending). 22.05 says why in the
    # submit's answer; 24.11 and 26.05 answer with no warning and give the reason on the pending job.
    result = alice.submit(sleeper(partition="debug", time_limit=60))
    cleanup("alice", result.job_id)
    assert result.job_id > 0
    if slurm_release == "22.05":
        assert any("Requested partition configuration not available now" in w for w in result.warnings)
        return
    assert result.warnings == ()
    deadline = time.monotonic() + WAIT_SECONDS
    while (job := alice.job(result.job_id)).state_reason != "PartitionTimeLimit":
        assert job.state == "PENDING", (job.state, job.state_reason)
        assert time.monotonic() < deadline, f"still {job.state_reason!r}"
        time.sleep(0.3)


def test_a_gpu_job_runs_on_the_gpu_partition(as_user, cleanup):
    alice = as_user("alice")
    out = output_path("alice")
    spec = JobSpec(
        script=f'#!/bin/sh\necho "gpus=$CUDA_VISIBLE_DEVICES" > {out}\n',
        working_directory=str(out.parent),
        environment=ENVIRONMENT,
        partition="gpu",
        gpus="1",
        time_limit=2,
        standard_output="/dev/null",
    )
    try:
        result = alice.submit(spec)
        cleanup("alice", result.job_id)
        job = wait_for(alice, result.job_id)
        assert (job.state, job.exit_code, job.partition) == ("COMPLETED", 0, "gpu")
        assert job.gpus == 1
        assert out.read_text().strip() in {"gpus=0", "gpus=1"}
    finally:
        out.unlink(missing_ok=True)
