"""Job arrays in the policy and the ledger: priced as all their tasks, each task held to the per-job limits,
the throttle against the running-jobs limit, and one ledger entry that settles once every task ended."""

from __future__ import annotations

import pytest

from access import ledger
from access.models import Quota, Usage
from access.policy import Resources, decide, quota_status


def submit(person, cluster, request):
    return decide(person, "job.submit", cluster, request)


def test_resources_read_their_tasks_from_the_expression_or_take_them_as_given():
    assert (Resources("cpu", array="0-99%10").tasks, Resources("cpu", array="0-99%10").at_once) == (100, 10)
    assert Resources("cpu", tasks=5, at_once=5).is_array
    assert not Resources("cpu").is_array
    assert Resources("cpu", cpus=2, time_limit=30, tasks=10, at_once=2).cpu_hours == 10.0
    assert Resources("gpu", gpus=2, time_limit=60, array="1,3,5-9:2").gpu_hours == 10.0
    with pytest.raises(ValueError, match="has 100 tasks, 10 at once, not tasks=3"):
        Resources("cpu", array="0-99%10", tasks=3, at_once=3)
    with pytest.raises(ValueError, match="at_once"):
        Resources("cpu", tasks=2, at_once=3)
    with pytest.raises(ValueError, match="tasks must be a whole number of at least 1"):
        Resources("cpu", tasks=0)
    with pytest.raises(ValueError, match="would let no task run"):
        Resources("cpu", array="0-9%0")


def test_an_array_is_priced_as_all_its_tasks(jane, cluster):
    Quota.objects.create(cluster=cluster, user=jane, cpu_hours=10)
    fits = submit(jane, cluster, Resources("cpu", cpus=1, time_limit=60, array="0-9%2"))
    assert fits.allowed, fits.message
    assert fits.message.startswith("This array of 10 tasks may run on partition cpu of Cluster One; it asks")
    over = submit(jane, cluster, Resources("cpu", cpus=2, time_limit=60, array="0-5"))
    assert over.code == "cpu_budget"
    assert over.message.startswith("This array of 6 tasks asks for 12.0 CPU-hours; you have 10.0 of 10.0")


def test_each_task_is_held_to_the_per_job_limits(jane, cluster):
    Quota.objects.create(
        cluster=cluster, user=jane, max_cpus_per_job=4, max_memory_per_job=1024, max_walltime=60
    )
    # 100 tasks of 4 CPUs each: 400 CPUs in all, yet each task is a job of 4.
    assert submit(jane, cluster, Resources("cpu", cpus=4, time_limit=60, array="0-99")).allowed
    cpus = submit(jane, cluster, Resources("cpu", cpus=5, time_limit=60, array="0-1"))
    assert cpus.message == (
        "Each task of this array asks for 5 CPUs; your quota allows at most 4 CPUs per job on Cluster One."
    )
    memory = submit(jane, cluster, Resources("cpu", memory_mb=2048, time_limit=60, array="0-1"))
    assert memory.message.startswith("Each task of this array asks for 2048 MB of memory")
    walltime = submit(jane, cluster, Resources("cpu", time_limit=90, array="0-1"))
    assert walltime.message.startswith("Each task of this array asks for 90 minutes of walltime")
    untimed = submit(jane, cluster, Resources("cpu", array="0-1"))
    assert untimed.message.startswith("This array sets no time limit, and your quota on Cluster One needs")


def test_a_throttle_above_the_running_jobs_limit_is_refused_with_the_throttle_that_fits(jane, cluster):
    Quota.objects.create(cluster=cluster, user=jane, max_running_jobs=4)
    wide = submit(jane, cluster, Resources("cpu", time_limit=10, array="0-99"))
    assert (wide.allowed, wide.code) == (False, "max_running_jobs")
    assert wide.message == (
        "This array would run up to 100 tasks at once; your quota allows 4 running jobs on Cluster One; "
        "add a throttle such as --array=0-99%4."
    )
    assert (wide.facts["at_once"], wide.facts["limit"]) == (100, 4)
    loose = submit(jane, cluster, Resources("cpu", time_limit=10, array="0-99%10"))
    assert loose.message.endswith("add a throttle such as --array=0-99%4.")
    assert submit(jane, cluster, Resources("cpu", time_limit=10, array="0-99%4")).allowed
    # Without the expression (tasks and at_once only) the sentence still says what to do.
    counted = submit(jane, cluster, Resources("cpu", time_limit=10, tasks=8, at_once=8))
    assert counted.message.endswith("add a throttle such as %4 at the end of its --array.")


def test_the_queued_jobs_limit_counts_every_task(jane, cluster):
    Quota.objects.create(cluster=cluster, user=jane, max_queued_jobs=10)
    first = ledger.reserve(jane, cluster, Resources("cpu", time_limit=10, array="0-5"))
    assert first.allowed
    [status] = quota_status(jane, cluster)
    assert status.queued_jobs == 6
    refused = submit(jane, cluster, Resources("cpu", time_limit=10, array="0-4"))
    assert refused.code == "max_queued_jobs"
    assert refused.message == (
        "You already have 6 of 10 allowed jobs queued on Cluster One, and this array adds 5; "
        "submit fewer tasks or wait for some to start."
    )
    assert submit(jane, cluster, Resources("cpu", time_limit=10, array="0-3")).allowed
    assert submit(jane, cluster, Resources("cpu", time_limit=10)).allowed


def test_an_arrays_entry_follows_its_tasks_and_settles_with_their_real_use_once(jane, cluster):
    Quota.objects.create(cluster=cluster, user=jane, cpu_hours=100, max_running_jobs=10)
    rid = ledger.reserve(jane, cluster, Resources("cpu", cpus=2, time_limit=60, array="0-3%2")).reservation_id
    entry = Usage.objects.get(pk=rid)
    assert (entry.tasks, entry.tasks_queued, entry.reserved_cpu_hours) == (4, 4, 8.0)

    ledger.started(rid)
    ledger.array_progress(rid, queued=2, running=2)
    [status] = quota_status(jane, cluster)
    assert (status.running_jobs, status.queued_jobs, status.cpu_hours_reserved) == (2, 2, 8.0)

    # Task 0 ends after half an hour: its 2 reserved CPU-hours become the 1 it used.
    ledger.task_ended(rid, elapsed_seconds=1800, cpus=2, gpus=0)
    ledger.array_progress(rid, queued=1, running=2)
    [status] = quota_status(jane, cluster)
    assert (status.cpu_hours_reserved, status.cpu_hours_used, status.cpu_hours_left) == (6.0, 1.0, 93.0)

    for _ in range(3):
        ledger.task_ended(rid, elapsed_seconds=3600, cpus=2, gpus=0)
    ledger.settle_array(rid)
    ledger.settle_array(rid)  # a second call changes nothing
    entry.refresh_from_db()
    assert (entry.state, entry.elapsed_seconds, entry.used_cpu_hours) == (Usage.State.SETTLED, 12600, 7.0)
    [status] = quota_status(jane, cluster)
    assert (status.running_jobs, status.queued_jobs) == (0, 0)
    assert (status.cpu_hours_reserved, status.cpu_hours_used) == (0.0, 7.0)
