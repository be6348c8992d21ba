"""Issue 13's promise from a real person's shell: Slurm itself refuses what the console refuses.

A person made just in time by the console (a real Linux user, a real association) types sbatch,
srun and salloc in their own login shell, submits from inside a running job and through
slurmrestd with a token of their own; the job_submit plugin, reading the snapshot the console
published, refuses each with the console's sentence and nothing reaches the queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from access import policy, snapshot
from access.models import Grant, Publication, Quota, Usage
from access.policy import Resources
from accounts import api_tokens, posix, provisioning
from accounts.models import User
from accounts.slurm_access import SlurmAccessRefused, slurm_for
from audit.models import AuditEvent
from clusters.policy_file import write_policy
from clusters.slurm import JobSpec, SlurmError
from jobs import sync
from jobs.models import JobRecord
from tests.conftest import require
from tests.support.fake_headnode import ct_email, free_uid_block, remove_linux_user
from tests.support.slurm_shell import Release

# Every test runs on Slurm 22.05, 24.11 and 26.05 (tests/conftest.py): the same plugin, the same sentences.
pytestmark = [pytest.mark.slurm, pytest.mark.root, pytest.mark.every_release]


@pytest.fixture
def release(slurm_env) -> Release:
    """The release under test as a person's shell and root reach it: its commands, plugin and policy file."""
    return Release.of(slurm_env)


@pytest.fixture
def policy_file(release):
    """The release's policy file (a running demo's, perhaps) is put back as it was afterwards."""
    before = release.save_policy()
    yield release.policy_file
    release.restore_policy(before)


@pytest.fixture
def cluster(demo_cluster, policy_file, settings, release):
    require(os.geteuid() == 0, "needs root to create Linux users and write the policy file")
    require(policy_file.parent.is_dir(), f"{policy_file.parent} missing: run scripts/slurm-up.sh")
    start = free_uid_block()
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = start, start + 19
    demo_cluster.enforce_policy = True
    demo_cluster.save()
    # This console has read every refusal logged before the test (others' runs, with UIDs since reused).
    log = Path(demo_cluster.refusal_log)
    Publication.objects.update_or_create(
        cluster=demo_cluster, defaults={"refusals_read": log.stat().st_size if log.exists() else 0}
    )
    return demo_cluster


def researcher(cluster, *, partitions: str = "debug gpu", **limits) -> tuple[User, str]:
    """A person with a Linux account made by the console, a grant and (if any limits) a quota of their own."""
    person = User.objects.create(username=ct_email(), email=ct_email())
    name = posix.ensure_account(person).username
    provisioning.ensure_ready(person, cluster)
    Grant.objects.create(cluster=cluster, user=person, partitions=partitions, terminal=True)
    if limits:
        Quota.objects.create(cluster=cluster, user=person, **limits)
    return person, name


@pytest.fixture
def people(release):
    names: list[str] = []
    yield names
    for name in names:
        release.cancel_all(name)
        remove_linux_user(name)


def refused_with(typed, client: str, sentence: str) -> None:
    assert typed.code != 0, typed
    assert f"{client}: error: {sentence}" in typed.err, typed.err


def test_every_door_of_a_shell_is_refused_with_the_consoles_sentence(cluster, people, release):
    person, name = researcher(
        cluster, max_walltime=20, max_gpus_per_job=1, max_memory_per_job=1024, max_running_jobs=1
    )
    people.append(name)
    snapshot.publish(cluster)

    def says(**asked) -> str:
        decision = policy.decide(person, "job.submit", cluster, Resources(**asked))
        assert not decision.allowed
        return decision.message

    ungranted = says(partition="cpu", time_limit=5)
    assert ungranted == "You may not submit to partition cpu on Demo cluster; your access allows debug, gpu."
    refused_with(release.shell(name, "sbatch -p cpu -t 5 --wrap true"), "sbatch", ungranted)
    refused_with(release.shell(name, "sbatch -t 5 --wrap true"), "sbatch", ungranted)  # cpu is the default
    refused_with(release.shell(name, "sbatch -p debug,cpu -t 5 --wrap true"), "sbatch", ungranted)
    refused_with(
        release.shell(name, "sbatch -p debug -t 25 --wrap true"),
        "sbatch",
        says(partition="debug", time_limit=25),
    )
    refused_with(
        release.shell(name, "sbatch -p gpu -t 5 --gres=gpu:2 --wrap true"),
        "sbatch",
        says(partition="gpu", gpus=2, time_limit=5),
    )
    refused_with(
        release.shell(name, "sbatch -p gpu -t 5 --gpus=2 --wrap true"),
        "sbatch",
        says(partition="gpu", gpus=2, time_limit=5),
    )
    refused_with(
        release.shell(name, "sbatch -p debug -t 5 --mem=2048 --wrap true"),
        "sbatch",
        says(partition="debug", time_limit=5, memory_mb=2048),
    )
    refused_with(release.shell(name, "srun -p cpu -t 1 true"), "srun", ungranted)
    refused_with(release.shell(name, "salloc -p cpu -t 1 true"), "salloc", ungranted)

    # slurmrestd with a token of the person's own: refused too (the reason stays in Slurm's log).
    home = f"/home/{name}"
    with pytest.raises(SlurmError):
        slurm_for(person, cluster).submit(
            JobSpec(script="#!/bin/sh\ntrue\n", working_directory=home, partition="cpu", time_limit=1)
        )

    # An allowed job that, once running, submits to an ungranted partition from inside.
    release.shell(
        name,
        "cat > outer.sh <<'EOF'\n#!/bin/bash\nsbatch -p cpu -t 5 --wrap true > inside.out 2> inside.err\n"
        "echo done >> inside.out\nsleep 300\nEOF",
    )
    outer = release.shell(name, "sbatch -p debug -t 5 -o /dev/null outer.sh")
    assert outer.job_id, outer
    release.wait_for_state(outer.job_id, "RUNNING")
    inside = Path(home) / "inside.out"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "done" not in (inside.read_text() if inside.exists() else ""):
        time.sleep(0.2)
    assert f"sbatch: error: {ungranted}" in (Path(home) / "inside.err").read_text()

    # One running job is all the quota allows.
    refused_with(
        release.shell(name, "sbatch -p debug -t 5 --wrap true"),
        "sbatch",
        "You already have 1 of 1 allowed jobs running on Demo cluster; wait for one to finish.",
    )
    assert release.queue(name) == [(outer.job_id, "debug", "RUNNING")]

    # Every refusal reaches the audit log, the one from inside the job saying so.
    snapshot.collect_refusals(cluster)
    refusals = AuditEvent.objects.filter(action="job.refused_by_slurm", actor=person)
    assert refusals.count() >= 12
    assert refusals.filter(message__contains=f"from inside job {outer.job_id}").count() == 1
    assert set(refusals.values_list("reason", flat=True)) >= {
        "partition_not_granted",
        "max_walltime",
        "max_gpus",
        "max_memory",
        "max_running_jobs",
    }
    print(f"policy enforced by Slurm: {refusals.count()} refusals from a real shell, each the console's")


def test_forty_racing_sbatch_against_a_budget_for_ten_queue_exactly_ten(cluster, people, release):
    _, name = researcher(cluster, partitions="cpu", cpu_hours=10)
    people.append(name)
    snapshot.publish(cluster)
    sentence_start = "This job asks for 1.0 CPU-hours; you have 0.0 of 10.0 left"
    started = time.monotonic()
    typed = release.shell(
        name,
        "for i in $(seq 40); do sbatch -H -p cpu -t 60 --wrap true >/dev/null 2>>race.err & done; wait",
        timeout=120,
    )
    took = time.monotonic() - started
    assert typed.code == 0, typed
    queued = release.queue(name)
    errors = Path(f"/home/{name}/race.err").read_text()
    assert len(queued) == 10, queued
    assert errors.count(f"sbatch: error: {sentence_start}") == 30, errors
    print(f"racing sbatch: 40 at once from one shell, 10 queued, 30 refused, budget for 10 ({took:.1f} s)")


# One of each refusal.
REFUSED_WHEN_DOWN = (
    "sbatch -p cpu -t 5 --wrap true",  # partition
    "sbatch -p debug -t 25 --wrap true",  # walltime
    "sbatch -p gpu -t 5 --gres=gpu:2 --wrap true",  # GPUs
    "sbatch -p debug -t 5 --mem=2048 --wrap true",  # memory
    "sbatch -p debug -t 20 -c 2 --wrap true",  # budget: 0.7 CPU-hours of 0.5
    "srun -p cpu true",
)


def test_the_console_stopped_changes_nothing(cluster, people, release):
    limits = {"max_walltime": 20, "max_gpus_per_job": 1, "max_memory_per_job": 1024, "cpu_hours": 0.5}
    _, name = researcher(cluster, partitions="debug gpu", **limits)
    people.append(name)
    published = snapshot.publish(cluster)
    rules = snapshot.build(cluster)
    release.shell(name, "printf '#!/bin/bash\\nsbatch -p cpu -t 1 --wrap true 2>> inside.err\\n' > outer.sh")
    before = [release.shell(name, command) for command in REFUSED_WHEN_DOWN]
    assert all(t.code != 0 for t in before)
    # The console goes away: nothing of it answers, its rules are gone from its database, nothing publishes.
    Cluster = type(cluster)
    Cluster.objects.filter(pk=cluster.pk).update(enforce_policy=False)
    Grant.objects.filter(cluster=cluster).delete()
    Quota.objects.filter(cluster=cluster).delete()
    after = [release.shell(name, command) for command in REFUSED_WHEN_DOWN]
    assert [(t.code, t.err) for t in after] == [(t.code, t.err) for t in before]
    # And a job that submits a job: it runs, and its own sbatch is refused.
    assert release.shell(name, "sbatch -p debug -t 1 -o /dev/null outer.sh").job_id
    inside = Path(f"/home/{name}/inside.err")
    deadline = time.monotonic() + 30

    def said_inside() -> str:
        return inside.read_text() if inside.exists() else ""

    while "sbatch: error: You may not submit to partition cpu" not in said_inside():
        assert time.monotonic() < deadline, said_inside()
        time.sleep(0.3)
    allowed = release.shell(name, "sbatch -H -p debug -t 5 --wrap true")
    assert allowed.job_id, allowed
    print(
        f"console stopped: 7 refusals (partition, walltime, GPUs, memory, budget, srun, inside a job) "
        f"and 1 acceptance, as with it running (snapshot v{published.version})"
    )

    # The last snapshot grows old: past its max age it is refused (the default) or let through (open).
    three_hours_ago = timezone.now() - timedelta(hours=3)
    for when_stale in ("closed", "open"):
        old = rules | {"max_age": 3600, "when_stale": when_stale}
        text = snapshot.render(old, version=published.version + 1, generated_at=three_hours_ago)
        write_policy(cluster, cluster.policy_path, text, group=cluster.slurm_user)
        if when_stale == "closed":
            stale = release.shell(name, "sbatch -H -p debug -t 5 --wrap true")
    assert stale.code != 0
    assert "is 3 hours old, past its limit of 1 hour" in stale.err
    let_through = release.shell(name, "sbatch -H -p debug -t 5 --wrap true")
    assert let_through.job_id, let_through
    assert "let through unchecked" in let_through.err


@pytest.mark.django_db(transaction=True)
def test_a_grant_change_reaches_slurm_within_five_seconds(cluster, people, release):
    person, name = researcher(cluster, partitions="debug")
    people.append(name)
    assert Publication.objects.get(cluster=cluster).people == 1  # published when the grant was saved
    assert release.shell(name, "sbatch -H -p cpu -t 5 --wrap true").code != 0
    grant = Grant.objects.get(cluster=cluster, user=person)
    grant.partitions = "debug cpu"
    changed = time.monotonic()
    grant.save()
    accepted = None
    while time.monotonic() - changed < 10:
        typed = release.shell(name, "sbatch -H -p cpu -t 5 --wrap true")
        if typed.job_id:
            accepted = time.monotonic() - changed
            break
    assert accepted is not None, "the new grant never reached Slurm"
    assert accepted <= 5
    # And back: the withdrawn grant is refused again as quickly.
    grant.partitions = "debug"
    changed = time.monotonic()
    grant.save()
    refused = release.shell(name, "sbatch -H -p cpu -t 5 --wrap true")
    withdrawn = time.monotonic() - changed
    assert refused.code != 0
    assert withdrawn <= 5
    print(f"grant change reached Slurm in {accepted:.2f} s (granted) and {withdrawn:.2f} s (withdrawn)")
    with contextlib.suppress(Exception):
        release.cancel_all(name)


def test_a_job_queued_before_its_grant_was_withdrawn_is_cancelled_with_the_reason(
    cluster, people, client, release
):
    person, name = researcher(cluster, partitions="debug gpu")
    people.append(name)
    snapshot.publish(cluster)
    queued = release.shell(name, "sbatch -H -p debug -t 5 --wrap true")
    assert queued.job_id, queued
    grant = Grant.objects.get(cluster=cluster, user=person)
    grant.partitions = "gpu"
    grant.save()

    report = sync.sync_once()

    assert report.cancelled == 1, report.summary()
    sentence = "You may not submit to partition debug on Demo cluster; your access allows gpu."
    record = JobRecord.objects.get(cluster=cluster, slurm_job_id=queued.job_id)
    assert record.policy_note == f"Cancelled by the console: {sentence}"
    assert release.queue(name) == []
    event = AuditEvent.objects.get(action="job.cancelled_by_policy", actor=person)
    assert event.target == f"job {queued.job_id}"
    client.force_login(person)
    page = client.get(f"/clusters/{cluster.slug}/jobs/{queued.job_id}/")
    assert sentence in page.content.decode()
    # The next round has nothing more to do.
    assert sync.sync_once().cancelled == 0


def sacctmgr_assocs(release: Release, name: str) -> dict[str, tuple[str, str, str]]:
    shown = subprocess.run(
        [
            release.command("sacctmgr"),
            "-n",
            "-P",
            "show",
            "assoc",
            f"user={name}",
            "format=partition,maxwall,maxjobs,maxtresperjob",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in shown.splitlines():
        partition, wall, jobs, tres = line.split("|")
        found[partition] = (wall, jobs, tres)
    return found


def test_slurms_own_limits_hold_with_the_plugin_gone(cluster, people, slurm_env, release):
    require(slurm_env.accounting, "association limits need slurmdbd (SLURM_DEMO_ACCOUNTING=1)")
    person, name = researcher(
        cluster, partitions="debug gpu", max_walltime=20, max_cpus_per_job=2, max_running_jobs=1
    )
    people.append(name)
    assert set(sacctmgr_assocs(release, name)) == {""}  # provisioning's association: every partition

    sync.sync_once()

    assert sacctmgr_assocs(release, name) == {
        "debug": ("00:20:00", "1", "cpu=2"),
        "gpu": ("00:20:00", "1", "cpu=2"),
    }
    with release.plugin_removed():
        refused = release.shell(name, "sbatch -H -p cpu -t 5 --wrap true")
        assert refused.code != 0
        assert "Invalid account or account/partition combination" in refused.err
        held = release.shell(name, "sbatch -H -p debug -t 25 --wrap true")
        assert held.job_id, held
        reason = subprocess.run(
            [release.command("squeue"), "-h", "-j", str(held.job_id), "-o", "%r"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert reason in ("AssocMaxWallDurationPerJobLimit", "JobHeldUser"), reason

    # The grant withdrawn altogether: the associations stay, and take no new job.
    Grant.objects.filter(cluster=cluster, user=person).delete()
    sync.sync_once()
    with release.plugin_removed():
        blocked = release.shell(name, "sbatch -H -p debug -t 5 --wrap true")
    assert blocked.code != 0
    assert "Job violates accounting/QOS policy" in blocked.err
    print("second lock: partitions, MaxWall, MaxJobs and MaxTRESPerJob held by slurmdbd with the plugin gone")


def test_the_console_passes_on_what_slurm_saw_first(cluster, people, client, release):
    """A job started from the shell that the console has not synced yet: the console allows, Slurm refuses,
    and the person reads the plugin's sentence through /v1, not a bare error code."""
    person, name = researcher(cluster, partitions="debug", max_running_jobs=1)
    people.append(name)
    snapshot.publish(cluster)
    running = release.shell(name, "sbatch -p debug -t 5 -o /dev/null --wrap 'sleep 300'")
    assert running.job_id, running
    release.wait_for_state(running.job_id, "RUNNING")
    release.shell(name, "printf '#!/bin/bash\\n#SBATCH -p debug\\n#SBATCH -t 5\\ntrue\\n' > job.sh")
    _, token = api_tokens.issue(person, name="test")

    answer = client.post(
        f"/v1/clusters/{cluster.slug}/jobs",
        data=json.dumps({"script_path": f"/home/{name}/job.sh"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )

    assert answer.status_code == 403, answer.content
    error = answer.json()["error"]
    assert error["code"] == "max_running_jobs"
    assert error["message"].startswith(
        "You already have 1 of 1 allowed jobs running on Demo cluster; wait for one to finish."
    )
    assert release.queue(name) == [(running.job_id, "debug", "RUNNING")]
    assert not Usage.objects.filter(cluster=cluster, state__in=Usage.OPEN).exists()


def test_a_queued_job_cannot_be_stretched_past_what_it_was_priced_at(cluster, people, release, slurm_release):
    _, name = researcher(cluster, partitions="debug gpu", max_walltime=20)
    people.append(name)
    snapshot.publish(cluster)
    queued = release.shell(name, "sbatch -H -p debug -t 5 --wrap true")
    assert queued.job_id, queued
    for change, what in (
        ("timelimit=25", "raise its time limit"),
        ("partition=gpu", "move it to another partition"),
    ):
        stretched = release.shell(name, f"scontrol update jobid={queued.job_id} {change}")
        assert stretched.code != 0, (change, stretched)
        assert f"for job {queued.job_id}" in stretched.err, stretched.err
        # 22.05 drops what job_modify says (the person reads only Slurm's "Job violates accounting/QOS
        # policy … for job N"); 24.11 and 26.05 print the plugin's sentence before it.
        sentence = f"as it was submitted, so you cannot {what}; cancel it and submit it again."
        assert (
            f"scontrol: error: A queued job was priced by the console's policy {sentence}" in stretched.err
        ) == (slurm_release != "22.05"), stretched.err
    shorter = release.shell(name, f"scontrol update jobid={queued.job_id} timelimit=3")
    assert shorter.code == 0, shorter
    show = [release.command("scontrol"), "show", "job", str(queued.job_id)]
    shown = subprocess.run(show, capture_output=True, text=True, check=True).stdout
    assert "TimeLimit=00:03:00" in shown
    assert "Partition=debug" in shown
    # An operator (root) is not the console's to govern.
    subprocess.run(
        [release.command("scontrol"), "update", f"jobid={queued.job_id}", "timelimit=25"], check=True
    )


def shadow_expiry(name: str) -> str:
    entry = subprocess.run(["getent", "shadow", name], capture_output=True, text=True, check=True).stdout
    return entry.split(":")[7]


def test_no_grant_left_locks_the_account_until_a_grant_is_back(
    cluster, people, django_capture_on_commit_callbacks
):
    person, name = researcher(cluster, partitions="debug")
    people.append(name)
    assert shadow_expiry(name) == ""
    Grant.objects.filter(cluster=cluster, user=person).delete()

    report = sync.sync_once()

    assert report.suspended == 1, report.summary()
    row = person.posix_account.clusters.get(cluster=cluster)
    assert row.state == "suspended"
    assert shadow_expiry(name) == "1"  # expired in 1970: no login by any means that checks the account
    assert AuditEvent.objects.filter(action="access.suspended", target=name).exists()

    # Until a grant is back, nothing acts as them there.
    with pytest.raises(SlurmAccessRefused, match="is locked until an administrator grants it again"):
        slurm_for(person, cluster)
    # A grant again unlocks it (after the commit; this test's transaction stands in for it).
    with django_capture_on_commit_callbacks(execute=True):
        Grant.objects.create(cluster=cluster, user=person, partitions="debug")
    slurm_for(person, cluster)
    row.refresh_from_db()
    assert row.state == "ready"
    assert shadow_expiry(name) == ""
    assert sync.sync_once().suspended == 0
