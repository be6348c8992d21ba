"""The job_submit plugin and access.policy give the same answer, in the same words, for the same job.

The plugin runs in Lua 5.1 on the snapshot the console compiles (tests/support/plugin_support.py); the
console decides from the database. Open reservations in the console's ledger are, for the plugin,
jobs in slurmctld's own table (slurm.jobs), stamped with what they were priced at.
"""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from access import ledger, policy, snapshot
from access.arrays import array_tasks
from access.models import Grant, Quota, Usage
from access.policy import Resources
from accounts.models import PosixAccount, User
from clusters.models import Cluster
from tests.support import plugin_support as plugin

pytestmark = pytest.mark.django_db

UID = 200100
MATE = 200101


@pytest.fixture(autouse=True)
def _lua():
    plugin.lua_available()


@pytest.fixture
def team(cluster) -> Group:
    return Group.objects.create(name="ml-team")


def person(name: str, uid: int, *groups: Group) -> User:
    user = User.objects.create(username=name)
    user.groups.add(*groups)
    PosixAccount.objects.create(user=user, username=name, uid=uid, gid=uid)
    return user


def policy_text(cluster: Cluster) -> str:
    return snapshot.render(snapshot.build(cluster), version=1, generated_at=timezone.now())


def open_jobs(cluster: Cluster) -> list[dict]:
    """The ledger's open reservations as the jobs slurmctld would list for them.

    An array is its record of tasks not started yet (array_task_cnt of them) and one running job per
    running task; its tasks that ended are settled use, in the snapshot.
    """
    jobs = []
    for entry in Usage.objects.filter(cluster=cluster, state__in=Usage.OPEN):
        uid = entry.user.posix_account.uid
        price = {"cpus": entry.cpus, "gpus": entry.gpus, "minutes": entry.time_limit}
        if entry.tasks > 1:
            if entry.tasks_queued:
                jobs.append(plugin.live_job(uid, array_task_cnt=entry.tasks_queued, **price))
            jobs += [plugin.live_job(uid, state=1, **price) for _ in range(entry.tasks_running)]
            continue
        state = 1 if entry.state == Usage.State.RUNNING else 0
        jobs.append(plugin.live_job(uid, state=state, **price))
    return jobs


def both(tmp_path, cluster: Cluster, who: User, requests: list[Resources]):
    """(console decision, plugin answer) for each request."""
    uid = who.posix_account.uid
    cases = [{"desc": plugin.desc_for(r, uid), "jobs": open_jobs(cluster)} for r in requests]
    answers = plugin.run(tmp_path, cases, policy=policy_text(cluster))
    return [(policy.decide(who, "job.submit", cluster, r), a) for r, a in zip(requests, answers, strict=True)]


def assert_same(pairs) -> None:
    for decision, answer in pairs:
        assert answer.accepted == decision.allowed, (decision.message, answer)
        if not decision.allowed:
            assert answer.sentence == decision.message


def test_every_refusal_reads_the_same_from_slurm_and_from_the_console(tmp_path, cluster, team):
    jane = person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, partitions="gpu debug", accounts="ml", qos="high")
    Quota.objects.create(
        cluster=cluster,
        group=team,
        max_nodes_per_job=2,
        max_cpus_per_job=8,
        max_gpus_per_job=2,
        max_memory_per_job=4096,
        max_walltime=120,
        gpu_hours=10,
        cpu_hours=40,
    )
    Quota.objects.create(cluster=cluster, user=jane, max_running_jobs=1, max_queued_jobs=3)
    requests = [
        Resources("gpu", gpus=1, time_limit=60),  # allowed
        Resources("cpu", time_limit=10),  # partition not granted
        Resources("gpu", nodes=3, cpus=3, time_limit=10),
        Resources("gpu", cpus=9, time_limit=10),
        Resources("gpu", gpus=3, time_limit=10),
        Resources("gpu", memory_mb=8192, time_limit=10),
        Resources("gpu", nodes=2, cpus=2, memory_mb=4096, time_limit=10),  # exactly the limit
        Resources("gpu", time_limit=0),
        Resources("gpu", time_limit=121),
        Resources("gpu", gpus=2, time_limit=120),  # 4 of 10 GPU-hours
        Resources("gpu", cpus=8, time_limit=120),  # 16 of 40 CPU-hours
        Resources("gpu", account="ml", time_limit=10),
        Resources("gpu", account="physics", time_limit=10),
        Resources("gpu", account="demo", time_limit=10),  # the cluster's default account
        Resources("gpu", qos="high", time_limit=10),
        Resources("gpu", qos="normal", time_limit=10),
    ]
    pairs = both(tmp_path, cluster, jane, requests)
    assert_same(pairs)
    codes = [d.code for d, _ in pairs]
    assert codes == [
        "ok",
        "partition_not_granted",
        "max_nodes",
        "max_cpus",
        "max_gpus",
        "max_memory",
        "ok",
        "walltime_required",
        "max_walltime",
        "ok",
        "ok",
        "ok",
        "account_not_granted",
        "ok",
        "ok",
        "account_not_granted",
    ]


def test_budgets_and_job_counts_agree_with_what_is_queued_and_running(tmp_path, cluster, team):
    jane = person("jane", UID, team)
    mate = person("mate", MATE, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    Quota.objects.create(cluster=cluster, group=team, gpu_hours=6, cpu_hours=20, max_queued_jobs=3)
    Quota.objects.create(cluster=cluster, user=jane, max_running_jobs=1)
    # Settled use this month (in the snapshot) and open jobs (in slurm.jobs), from both members.
    for who, cpus, gpus, hours in ((jane, 4, 1, 1.5), (mate, 2, 0, 2.0)):
        rid = ledger.reserve(who, cluster, Resources("gpu", cpus=cpus, gpus=gpus, time_limit=int(hours * 60)))
        ledger.attach(rid.reservation_id, rid.reservation_id + 1000)
        ledger.started(rid.reservation_id)
        ledger.settle(rid.reservation_id, elapsed_seconds=int(hours * 3600), cpus=cpus, gpus=gpus)
    queued = ledger.reserve(mate, cluster, Resources("gpu", cpus=2, gpus=1, time_limit=60))
    assert queued.allowed
    pairs = both(
        tmp_path,
        cluster,
        jane,
        [
            Resources("gpu", gpus=1, time_limit=60),
            Resources("gpu", gpus=3, time_limit=60),  # 3 of 3.5 GPU-hours left: allowed
            Resources("gpu", gpus=4, time_limit=60),  # 4 of 3.5: refused
            Resources("gpu", cpus=8, time_limit=60),  # 8 of 20 - 6 - 4 - 2 = 8: allowed, exactly
            Resources("gpu", cpus=9, time_limit=60),
        ],
    )
    assert_same(pairs)
    assert [d.code for d, _ in pairs] == ["ok", "ok", "gpu_budget", "ok", "cpu_budget"]

    # Jane's own running-job limit, and the group's queue.
    started = ledger.reserve(jane, cluster, Resources("cpu", time_limit=10))
    ledger.started(started.reservation_id)
    for _ in range(2):
        ledger.reserve(mate, cluster, Resources("cpu", time_limit=10))
    pairs = both(tmp_path, cluster, jane, [Resources("cpu", time_limit=10)])
    assert_same(pairs)
    assert pairs[0][0].code == "max_running_jobs"
    Quota.objects.filter(user=jane).delete()
    pairs = both(tmp_path, cluster, jane, [Resources("cpu", time_limit=10)])
    assert_same(pairs)
    assert pairs[0][0].code == "max_queued_jobs"


def test_random_jobs_get_the_same_answer_from_both(tmp_path, cluster, team):
    """Two hundred jobs drawn at random against limits drawn at random: never a different answer."""
    draw = random.Random(13)
    jane = person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, partitions="gpu debug")
    Quota.objects.create(
        cluster=cluster,
        group=team,
        max_nodes_per_job=draw.choice([None, 1, 2]),
        max_cpus_per_job=draw.choice([None, 4, 8]),
        max_gpus_per_job=draw.choice([None, 1, 2]),
        max_memory_per_job=draw.choice([None, 2048]),
        max_walltime=draw.choice([None, 60, 240]),
        gpu_hours=draw.choice([None, 3.0, 12.5]),
        cpu_hours=draw.choice([None, 10.0, 50.0]),
    )
    for _ in range(3):
        ledger.reserve(jane, cluster, Resources("gpu", cpus=2, gpus=1, time_limit=30))
    requests = []
    for _ in range(200):
        nodes = draw.choice([1, 1, 2, 3])
        partition = draw.choice(["gpu", "debug", "cpu"])
        # The console always fills in a partition's DefaultTime, as Slurm does for the plugin.
        minutes = draw.choice([0, 5, 30, 60, 90, 300]) or (10 if partition == "debug" else 0)
        requests.append(
            Resources(
                partition,
                nodes=nodes,
                cpus=nodes * draw.choice([1, 2, 4, 8]),
                gpus=draw.choice([0, 0, 1, 2, 3]),
                time_limit=minutes,
                memory_mb=nodes * draw.choice([0, 512, 1024, 4096]),
            )
        )
    pairs = both(tmp_path, cluster, jane, requests)
    assert_same(pairs)
    codes = {d.code for d, _ in pairs}
    assert "ok" in codes
    assert len(codes) >= 4, codes


def test_an_accepted_job_is_stamped_with_its_price(tmp_path, cluster, team):
    jane = person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    [answer] = plugin.run(
        tmp_path,
        [
            {
                "desc": plugin.desc(
                    UID, partition="gpu", time_limit=90, num_tasks=4, min_cpus=4, tres_per_node="gres:gpu:2"
                )
            }
        ],
        policy=policy_text(cluster),
    )
    assert answer.accepted
    assert answer.stamp.startswith("clusterra:v1 cpus=4 gpus=2 minutes=90 n=")
    assert jane.is_active


def test_jobs_accepted_but_not_yet_created_count_once_and_only_until_they_are_listed(tmp_path, cluster, team):
    """slurmctld asks the plugin before it takes its job lock: racing submits are not in slurm.jobs yet."""
    person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    Quota.objects.create(cluster=cluster, group=team, cpu_hours=10)
    one_hour = plugin.desc(UID, partition="cpu", time_limit=60)
    racing = [{"desc": one_hour} for _ in range(40)]
    listed = [{"desc": one_hour, "created": True} for _ in range(3)]
    answers = plugin.run(tmp_path, racing + listed, policy=policy_text(cluster), together=True)
    assert sum(a.accepted for a in answers[:40]) == 10
    assert [a.accepted for a in answers[:10]] == [True] * 10
    # Listed by slurmctld now: counted from slurm.jobs, and not a second time from memory.
    assert [a.accepted for a in answers[40:]] == [False] * 3
    assert "you have" not in answers[40].sentence
    assert "group ml-team has 0.0 of 10.0 left" in answers[40].sentence
    tokens = {a.stamp.rsplit("n=", 1)[1] for a in answers[:10]}
    assert len(tokens) == 10


def test_a_reused_job_list_is_read_no_further_than_the_jobs_that_had_not_ended(tmp_path, cluster, team):
    """slurm.jobs is slurmctld's cache, rebuilt only when its job table changed in a later second.

    Reused, it can still hold jobs purged since it was built, entries pointing at freed memory (slurmctld
    22.05 crashed reading one): the plugin reads a reused table only where a job had not ended when it
    was built (a purge takes only jobs ended MinJobAge ago), and keeps the ended jobs' use from then.
    """
    person("jane", UID, team)
    person("mate", MATE, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    Quota.objects.create(cluster=cluster, group=team, cpu_hours=10)
    now = int(time.time())
    queue = [
        plugin.live_job(UID, minutes=60),  # queued: holds 1 CPU-hour
        plugin.live_job(UID, state=3, start_time=now - 4 * 3600, end_time=now - 3600),  # ran 3 CPU-hours
        plugin.live_job(MATE, state=3, cpus=2, start_time=now - 5400, end_time=now),  # ran 2 x 1.5 h
        plugin.live_job(MATE, state=4, start_time=0, end_time=now),  # cancelled while queued: nothing
    ]
    four_hours = plugin.desc(UID, partition="cpu", time_limit=240)
    three_hours = plugin.desc(UID, partition="cpu", time_limit=180)
    cases = [
        {"desc": four_hours, "jobs": queue},
        {"desc": four_hours, "reuse": True, "purge": [2, 3, 4]},
        {"desc": three_hours, "reuse": True},
        # The harness's purge bites: a newly built list is read whole, so reading a purged entry fails.
        {"desc": four_hours, "jobs": queue, "purge": [2]},
    ]
    answers = plugin.run(tmp_path, cases, policy=policy_text(cluster), together=True)

    left = "group ml-team has 3.0 of 10.0 left this month"
    assert [a.accepted for a in answers[:3]] == [False, False, True], answers
    assert left in answers[0].sentence, answers[0]
    assert answers[1].sentence == answers[0].sentence, answers[1]
    assert answers[3].sentence.startswith("The console's policy check failed"), answers[3]


def test_a_job_missing_from_a_reused_job_list_may_be_running(tmp_path, cluster, team):
    """Accepted here, missing from a reused slurm.jobs: it may have started in the second that was built."""
    jane = person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    Quota.objects.create(cluster=cluster, user=jane, max_running_jobs=1, max_queued_jobs=5)
    job = plugin.desc(UID, partition="cpu", time_limit=10)
    cases = [
        {"desc": job},
        {"desc": job, "reuse": True},
        # Past the 30 s an accepted job is remembered: a reused list still cannot show it was never created.
        {"desc": job, "reuse": True, "later": 60},
        # A newly built list without it: never created, so neither running nor queued any more.
        {"desc": job, "later": 60},
    ]
    answers = plugin.run(tmp_path, cases, policy=policy_text(cluster), together=True)

    running = "You already have 1 of 1 allowed jobs running on Cluster One; wait for one to finish."
    assert [a.accepted for a in answers] == [True, False, False, True], answers
    assert answers[1].sentence == answers[2].sentence == running


def test_people_outside_the_consoles_uid_range_are_not_its_to_govern(tmp_path, cluster):
    answers = plugin.run(
        tmp_path,
        [{"desc": plugin.desc(1001, partition="cpu")}, {"desc": plugin.desc(0, partition="cpu")}],
        policy=policy_text(cluster),
    )
    assert [a.accepted for a in answers] == [True, True]
    assert all(a.stamp is None for a in answers)


def test_a_job_naming_no_partition_is_checked_against_the_default_one(tmp_path, cluster, team):
    person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, partitions="debug")
    [answer] = plugin.run(tmp_path, [{"desc": plugin.desc(UID)}], policy=policy_text(cluster))
    assert answer.sentence == "You may not submit to partition cpu on Cluster One; your access allows debug."


def test_without_a_snapshot_the_consoles_people_are_refused(tmp_path):
    answers = plugin.run(
        tmp_path, [{"desc": plugin.desc(UID, partition="debug")}, {"desc": plugin.desc(1001)}], policy=None
    )
    assert not answers[0].accepted
    assert "no policy from the Clusterra console" in answers[0].sentence
    assert answers[1].accepted


def test_a_broken_snapshot_refuses_and_says_so(tmp_path):
    [answer] = plugin.run(tmp_path, [{"desc": plugin.desc(UID)}], policy="-- clusterra policy v1\nreturn {{{")
    assert not answer.accepted
    assert "no readable policy" in answer.sentence


def test_a_snapshot_cannot_run_code(tmp_path):
    [answer] = plugin.run(
        tmp_path, [{"desc": plugin.desc(UID)}], policy="-- v1\nreturn {people = {os.execute('touch /tmp/x')}}"
    )
    assert not answer.accepted


def test_a_stale_snapshot_fails_closed_or_open_as_the_cluster_says(tmp_path, cluster, team):
    person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    cluster.policy_max_age = 10
    cluster.save()
    old = snapshot.render(
        snapshot.build(cluster), version=1, generated_at=timezone.now() - timedelta(minutes=30)
    )
    [closed] = plugin.run(tmp_path, [{"desc": plugin.desc(UID, partition="cpu")}], policy=old)
    assert not closed.accepted
    assert "is 30 minutes old, past its limit of 10 minutes" in closed.sentence
    cluster.policy_when_stale = "open"
    cluster.save()
    old = snapshot.render(
        snapshot.build(cluster), version=1, generated_at=timezone.now() - timedelta(minutes=30)
    )
    [opened] = plugin.run(tmp_path, [{"desc": plugin.desc(UID, partition="cpu")}], policy=old)
    assert opened.accepted
    assert "let through unchecked" in opened.sentence


def test_a_deactivated_person_hears_why(tmp_path, cluster, team):
    jane = person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    jane.is_active = False
    jane.save()
    [answer] = plugin.run(
        tmp_path, [{"desc": plugin.desc(UID, partition="cpu")}], policy=policy_text(cluster)
    )
    assert answer.sentence == policy.decide(jane, "job.submit", cluster, Resources("cpu")).message
    assert answer.rc == plugin.CODES["ESLURM_ACCESS_DENIED"]


def test_an_array_is_priced_as_all_its_tasks(tmp_path, cluster, team):
    person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    Quota.objects.create(cluster=cluster, group=team, cpu_hours=10, max_queued_jobs=20)
    answers = plugin.run(
        tmp_path,
        [
            {"desc": plugin.desc(UID, partition="cpu", time_limit=60, array_inx="0-9%2")},  # 10 CPU-hours
            {"desc": plugin.desc(UID, partition="cpu", time_limit=60, array_inx="1,3,5-11:2")},  # 6
            {"desc": plugin.desc(UID, partition="cpu", time_limit=60, array_inx="0-20")},  # 21 queued
            {
                "desc": plugin.desc(
                    UID, partition="cpu", time_limit=60, array_inx="0-3", min_cpus=3, cpus_per_task=3
                )
            },
            {"desc": plugin.desc(UID, partition="cpu", time_limit=60, array_inx="x")},
        ],
        policy=policy_text(cluster),
    )
    assert [a.accepted for a in answers] == [True, True, False, False, False]
    assert "has 0 of 20 allowed jobs queued on Cluster One, and this array adds 21" in answers[2].sentence
    assert "asks for 12.0 CPU-hours" in answers[3].sentence
    assert "cannot be priced" in answers[4].sentence


def test_arrays_get_the_same_answer_in_the_same_words_from_both(tmp_path, cluster, team):
    jane = person("jane", UID, team)
    mate = person("mate", MATE, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    Quota.objects.create(
        cluster=cluster,
        group=team,
        max_cpus_per_job=4,
        max_memory_per_job=2048,
        max_walltime=120,
        max_running_jobs=4,
        max_queued_jobs=30,
        cpu_hours=40,
        gpu_hours=6,
    )
    requests = [
        Resources("cpu", time_limit=60, array="0-9%4"),  # allowed: 10 CPU-hours, 4 at once
        Resources("cpu", cpus=4, time_limit=60, array="0-5%2"),  # 24 CPU-hours: allowed
        Resources("cpu", cpus=5, time_limit=10, array="0-1"),  # each task over the CPU limit
        Resources("cpu", memory_mb=4096, time_limit=10, array="0-1"),
        Resources("cpu", array="0-1"),  # no time limit
        Resources("cpu", time_limit=180, array="0-1"),
        Resources("cpu", time_limit=10, array="0-99"),  # 100 at once against 4 running jobs
        Resources("cpu", time_limit=10, array="1,3,5-9:2%8"),  # 5 at once
        Resources("cpu", time_limit=10, array="0-30%4"),  # 31 tasks queued
        Resources("cpu", cpus=4, time_limit=120, array="0-5%2"),  # 48 of 40 CPU-hours
        Resources("gpu", gpus=1, time_limit=60, array="0-6%2"),  # 7 of 6 GPU-hours
        Resources("gpu", gpus=1, time_limit=60, array="7"),  # an array of one task
    ]
    pairs = both(tmp_path, cluster, jane, requests)
    assert_same(pairs)
    assert [d.code for d, _ in pairs] == [
        "ok",
        "ok",
        "max_cpus",
        "max_memory",
        "walltime_required",
        "max_walltime",
        "max_running_jobs",
        "max_running_jobs",
        "max_queued_jobs",
        "cpu_budget",
        "gpu_budget",
        "ok",
    ]
    assert pairs[6][1].sentence == (
        "This array would run up to 100 tasks at once; group ml-team's quota allows 4 running jobs on "
        "Cluster One; add a throttle such as --array=0-99%4."
    )
    assert pairs[9][1].sentence.startswith("This array of 6 tasks asks for 48.0 CPU-hours; group ml-team has")

    # Part of an array running, part waiting, one task ended: both count it alike.
    rid = ledger.reserve(mate, cluster, Resources("cpu", cpus=2, time_limit=60, array="0-9%3")).reservation_id
    ledger.attach(rid, 900)
    ledger.started(rid)
    ledger.task_ended(rid, elapsed_seconds=1800, cpus=2, gpus=0)
    ledger.array_progress(rid, queued=6, running=3)
    later = [
        Resources("cpu", time_limit=10, array="0-1"),  # 3 running: a throttle of 2 is fine
        Resources("cpu", time_limit=10, array="0-24%1"),  # 6 queued + 25 > 30
        Resources("cpu", cpus=4, time_limit=60, array="0-4%1"),  # 40 - 1 used - 18 held = 21 left
        Resources("cpu", cpus=4, time_limit=60, array="0-5%1"),  # 24 > 21
    ]
    pairs = both(tmp_path, cluster, jane, later)
    assert_same(pairs)
    assert [d.code for d, _ in pairs] == ["ok", "max_queued_jobs", "ok", "cpu_budget"]
    assert "group ml-team has 21.0 of 40.0 left" in pairs[3][0].message


def test_a_pending_array_in_the_queue_counts_every_task(tmp_path, cluster, team):
    person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    Quota.objects.create(cluster=cluster, group=team, cpu_hours=10)
    queue = [plugin.live_job(UID, minutes=60, array_task_cnt=9)]
    answers = plugin.run(
        tmp_path,
        [
            {"desc": plugin.desc(UID, partition="cpu", time_limit=60), "jobs": queue},
            {"desc": plugin.desc(UID, partition="cpu", time_limit=120), "jobs": queue},
        ],
        policy=policy_text(cluster),
    )
    assert [a.accepted for a in answers] == [True, False]
    assert "group ml-team has 1.0 of 10.0 left" in answers[1].sentence


def test_every_gpu_spelling_counts(tmp_path, cluster, team):
    person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    Quota.objects.create(cluster=cluster, group=team, max_gpus_per_job=2)
    spellings = [
        {"tres_per_job": "gres:gpu:3"},
        {"tres_per_job": "gres/gpu:3"},
        {"tres_per_node": "gres:gpu:gpu:3"},
        {"tres_per_node": "gres/gpu:a100:3"},
        {"tres_per_node": "gres:gpu:1", "min_nodes": 3},
        {"tres_per_task": "gres/gpu=1", "num_tasks": 3},
        {"tres_per_node": "gres/shard:4,gres/gpu:3"},
    ]
    answers = plugin.run(
        tmp_path,
        [{"desc": plugin.desc(UID, partition="gpu", time_limit=10, **s)} for s in spellings],
        policy=policy_text(cluster),
    )
    assert [a.accepted for a in answers] == [False] * len(spellings), answers
    assert all("asks for 3 GPUs" in a.sentence for a in answers)


def test_a_refusal_is_logged_for_the_console_in_ascii(tmp_path, cluster, team):
    person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, partitions="debug")
    plugin.run(
        tmp_path,
        [{"desc": plugin.desc(UID, partition="cpu", name='a"b\nc|é', environment={"SLURM_JOB_ID": "42"})}],
        policy=policy_text(cluster),
    )
    line = (tmp_path / "refusals.log").read_bytes()
    assert line.isascii()
    assert line.endswith(b"\n")
    entry = json.loads(line)
    assert (entry["uid"], entry["code"], entry["inside_job"]) == (UID, "partition_not_granted", "42")
    assert entry["name"] == 'a"b\nc|\u00c3\u00a9'  # the name's bytes, each as a character


EXPRESSIONS = ["0-99%10", "1,3,5-9:2", "7", "0-3%2", "0-9%20", "1-10:3", " 0-2 ", "0-1,0-1"]
UNREADABLE = ["x", "1,,3", "1,", "5-1", "1-9:0", "0-9%0", "0-9%", "0-9%2%3", "-1"]


def test_the_plugin_reads_an_array_expression_as_access_arrays_does(tmp_path, cluster, team):
    """Its tasks from the queued-jobs sentence, its tasks at once from the running-jobs one."""
    person("jane", UID, team)
    Grant.objects.create(cluster=cluster, group=team, all_partitions=True)
    limit = Quota.objects.create(cluster=cluster, group=team, max_queued_jobs=0)
    cases = [
        {"desc": plugin.desc(UID, partition="cpu", time_limit=5, array_inx=e)}
        for e in EXPRESSIONS + UNREADABLE
    ]
    queued = plugin.run(tmp_path, cases, policy=policy_text(cluster))
    limit.max_queued_jobs, limit.max_running_jobs = None, 1
    limit.save()
    running = plugin.run(tmp_path, cases, policy=policy_text(cluster))
    readable = len(EXPRESSIONS)
    for expression, by_queue, by_running in zip(
        EXPRESSIONS, queued[:readable], running[:readable], strict=True
    ):
        tasks, at_once = array_tasks(expression)
        assert f"and this array adds {tasks};" in by_queue.sentence, expression
        if at_once == 1:
            assert by_running.accepted, expression
        else:
            assert f"would run up to {at_once} tasks at once" in by_running.sentence, expression
    for expression, answer in zip(UNREADABLE, queued[readable:], strict=True):
        with pytest.raises(ValueError, match="array"):
            array_tasks(expression)
        assert "cannot be priced" in answer.sentence, expression
