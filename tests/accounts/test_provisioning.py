"""accounts.provisioning and slurm_access: ordered, resumable, audited steps; and for real on this host."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.db import connection
from django.utils import timezone

from accounts import posix, provisioning
from accounts.models import ClusterAccount, User
from accounts.slurm_access import SlurmAccessRefused, slurm_for
from audit.models import AuditEvent
from clusters import tokens
from clusters.headnode import Result as R
from clusters.models import Cluster
from clusters.slurm import JobSpec
from tests.conftest import require
from tests.support import slurm_commands
from tests.support.fake_headnode import ct_email, remove_linux_user

State = ClusterAccount.State


@pytest.fixture
def uid_range(settings):
    settings.CLUSTERRA_UID_MIN = 60100
    settings.CLUSTERRA_UID_MAX = 60199


@pytest.fixture
def cluster(db, tmp_path):
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    return Cluster.objects.create(
        slug="c1",
        name="Cluster One",
        slurmrestd_url="http://127.0.0.1:9",
        api_version="v0.0.38",
        jwt_key_ref=str(key),
        home_root="/home",
        slurm_account="demo",
    )


@pytest.fixture
def jane(db, uid_range) -> User:
    return User.objects.create(username="jane", email="jane@corp.example")


def row_of(user: User, cluster: Cluster) -> ClusterAccount:
    return ClusterAccount.objects.get(account__user=user, cluster=cluster)


# --- the steps, against a pretend head node ------------------------------------------------------


SHOW_USER = [
    "sacctmgr",
    "-n",
    "-P",
    "show",
    "user",
    "name=jane",
    "withcoord",
    "format=user,adminlevel,coordinators",
]


def test_it_runs_the_steps_in_order_and_ends_ready(jane, cluster, fake):
    row = provisioning.ensure_ready(jane, cluster)
    assert row.state == State.READY
    assert fake.calls == [
        ["getent", "group", "jane", "60100"],
        ["groupadd", "-g", "60100", "jane"],
        ["getent", "passwd", "jane", "60100"],
        SHOW_USER,
        [
            "useradd",
            "--no-log-init",
            "-K",
            "UMASK=0077",
            "-u",
            "60100",
            "-g",
            "60100",
            "-m",
            "-d",
            "/home/jane",
            "-s",
            "/bin/bash",
            "jane",
        ],
        ["chmod", "0700", "--", "/home/jane"],
        # The console's own host (a local cluster): the group its services refuse.
        ["groupadd", "--system", "-f", "clusterra-people"],
        ["usermod", "-a", "-G", "clusterra-people", "jane"],
        SHOW_USER,
        ["scontrol", "show", "config"],
        ["sacctmgr", "-n", "-P", "show", "assoc", "cluster=demo", "user=jane", "account=demo", "format=user"],
        ["sacctmgr", "-i", "add", "user", "jane", "account=demo", "cluster=demo"],
    ]
    assert fake.members == {"clusterra-people": {"jane"}}
    row.refresh_from_db()
    assert row.user_created_at is not None
    assert row.associated_at is not None
    assert row.busy_until is None
    assert row.attempts == 1
    actions = list(
        AuditEvent.objects.filter(action__startswith="provisioning.")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == [
        "provisioning.started",
        "provisioning.group",
        "provisioning.user",
        "provisioning.association",
        "provisioning.ready",
    ]


def test_a_second_call_touches_nothing(jane, cluster, fake):
    provisioning.ensure_ready(jane, cluster)
    fake.calls.clear()
    assert provisioning.ensure_ready(jane, cluster).state == State.READY
    assert fake.calls == []


def test_without_accounting_there_is_no_association(jane, cluster, fake):
    cluster.has_accounting = False
    cluster.save()
    assert provisioning.ensure_ready(jane, cluster).state == State.READY
    assert not any(c[0] == "sacctmgr" for c in fake.calls)


def test_a_user_already_there_with_the_right_uid_counts_as_done(jane, cluster, fake):
    fake.groups["jane"] = 60100
    fake.passwd["jane"] = 60100
    fake.associations.add(("jane", "demo"))
    assert provisioning.ensure_ready(jane, cluster).state == State.READY
    # Only the membership of the people's group is (re)done: usermod -a -G is idempotent.
    assert [c[0] for c in fake.calls] == [
        "getent",
        "getent",
        "groupadd",
        "usermod",
        "sacctmgr",
        "scontrol",
        "sacctmgr",
    ]
    assert AuditEvent.objects.get(action="provisioning.user").details["created"] is False


def test_a_name_slurm_already_knows_is_not_handed_someone_elses_rights(jane, cluster, fake):
    fake.slurm_users["jane"] = ("None", "")  # a Slurm user from before the console, with a history
    with pytest.raises(provisioning.ProvisioningError) as refused:
        provisioning.ensure_ready(jane, cluster)
    assert refused.value.code == "slurm_user_taken"
    assert "Slurm already has a user named jane that the console did not make" in refused.value.message
    assert "jane" not in fake.passwd
    # Asked again, the same answer: nothing was made that a retry could take for the console's own.
    with pytest.raises(provisioning.ProvisioningError):
        provisioning.ensure_ready(jane, cluster)


def test_a_slurm_administrators_name_is_never_a_persons(jane, cluster, fake):
    fake.passwd["jane"] = 60100  # even their own Linux user (made earlier, or by hand)
    fake.groups["jane"] = 60100
    fake.slurm_users["jane"] = ("Operator", "")
    with pytest.raises(provisioning.ProvisioningError) as refused:
        provisioning.ensure_ready(jane, cluster)
    assert refused.value.code == "slurm_admin_name"
    assert "has AdminLevel Operator" in refused.value.message
    assert not fake.associations


def test_a_coordinators_name_is_never_a_persons(jane, cluster, fake):
    fake.passwd["jane"] = 60100
    fake.groups["jane"] = 60100
    fake.slurm_users["jane"] = ("None", "physics")
    with pytest.raises(provisioning.ProvisioningError) as refused:
        provisioning.ensure_ready(jane, cluster)
    assert "coordinator rights over physics" in refused.value.message


def test_a_user_already_there_with_another_uid_stops_with_a_clear_sentence(jane, cluster, fake):
    fake.groups["jane"] = 60100
    fake.passwd["jane"] = 1234
    with pytest.raises(provisioning.ProvisioningError) as caught:
        provisioning.ensure_ready(jane, cluster)
    error = caught.value
    assert error.code == "user_name_taken"
    assert "a user named jane already exists there with UID 1234" in error.message
    assert "Cluster One" in error.message
    row = row_of(jane, cluster)
    assert row.state == State.FAILED
    assert row.last_error == error.message
    assert row.user_created_at is None
    assert row.busy_until is None
    assert not any(c[0] == "useradd" for c in fake.calls)
    event = AuditEvent.objects.get(action="provisioning.user")
    assert (event.outcome, event.reason) == ("error", "user_name_taken")


def test_a_uid_held_by_someone_else_on_the_head_node_is_refused(jane, cluster, fake):
    fake.passwd["olduser"] = 60100
    with pytest.raises(provisioning.ProvisioningError, match="UID 60100 is already used there by olduser"):
        provisioning.ensure_ready(jane, cluster)


def test_a_group_of_that_name_with_another_gid_is_refused(jane, cluster, fake):
    fake.groups["jane"] = 5000
    with pytest.raises(
        provisioning.ProvisioningError, match="group named jane already exists there with GID 5000"
    ):
        provisioning.ensure_ready(jane, cluster)
    assert fake.programs() == ["getent group"]


def test_a_failed_association_resumes_without_recreating_the_user(jane, cluster, fake):
    cluster.slurm_account = "physics"
    cluster.save()
    with pytest.raises(
        provisioning.ProvisioningError, match="This account 'physics' doesn't exist"
    ) as caught:
        provisioning.ensure_ready(jane, cluster)
    assert caught.value.step == "association"
    row = row_of(jane, cluster)
    assert (row.state, row.attempts) == (State.FAILED, 1)
    assert row.user_created_at is not None

    fake.accounts.add("physics")
    fake.calls.clear()
    row = provisioning.ensure_ready(jane, cluster)
    assert (row.state, row.attempts, row.last_error) == (State.READY, 2, "")
    assert fake.programs() == ["sacctmgr -n", "scontrol show", "sacctmgr -n", "sacctmgr -i"]


def test_a_uid_slurm_keeps_for_a_user_who_left_is_named_in_the_refusal(jane, cluster, fake):
    # Slurm 24.11 and later keep a user's UID after its Linux user is gone, and refuse another name with it.
    fake.slurm_uids["olduser"] = 60100
    with pytest.raises(provisioning.ProvisioningError) as caught:
        provisioning.ensure_ready(jane, cluster)
    assert (caught.value.code, caught.value.step) == ("slurm_uid_taken", "association")
    assert "Slurm already has a user olduser with UID 60100" in caught.value.message
    assert "sacctmgr delete user olduser" in caught.value.message
    assert ("jane", "demo") not in fake.associations

    del fake.slurm_uids["olduser"]  # an administrator removed it
    assert provisioning.ensure_ready(jane, cluster).state == State.READY


def test_an_unreachable_head_node_says_try_again_and_the_next_call_resumes(jane, cluster, fake):
    fake.down = True
    with pytest.raises(provisioning.ProvisioningError, match="try again later") as caught:
        provisioning.ensure_ready(jane, cluster)
    assert caught.value.code == "head_node_unreachable"
    fake.down = False
    assert provisioning.ensure_ready(jane, cluster).state == State.READY


def test_a_lost_race_to_create_the_user_still_counts_as_done(jane, cluster, fake):
    # useradd fails because someone made the same user a moment ago; the second look finds it is ours.
    fake.broken["useradd"] = R(9, "", "useradd: user 'jane' already exists")
    original = fake._getent
    looks = []

    def getent(args):
        looks.append(args)
        if args[0] == "passwd" and len(looks) == 3:
            fake.passwd["jane"] = 60100
        return original(args)

    fake._getent = getent
    assert provisioning.ensure_ready(jane, cluster).state == State.READY


def test_a_home_that_cannot_be_made_private_fails_the_step(jane, cluster, fake):
    fake.broken["chmod"] = R(1, "", "chmod: changing permissions of '/home/jane': Read-only file system")
    with pytest.raises(provisioning.ProvisioningError) as caught:
        provisioning.ensure_ready(jane, cluster)
    assert (caught.value.code, caught.value.step) == ("chmod_failed", "user")
    assert "the home /home/jane could not be made private: chmod: " in caught.value.message
    assert row_of(jane, cluster).user_created_at is None


def test_an_inactive_person_is_not_provisioned(jane, cluster, fake):
    jane.is_active = False
    jane.save()
    with pytest.raises(provisioning.ProvisioningError, match="deactivated") as caught:
        provisioning.ensure_ready(jane, cluster)
    assert caught.value.code == "inactive"
    assert fake.calls == []
    assert AuditEvent.objects.get(action="provisioning.refused").outcome == "denied"


def test_a_locked_account_is_not_provisioned_again(jane, cluster, fake):
    ClusterAccount.objects.create(account=posix.ensure_account(jane), cluster=cluster, state=State.LOCKED)
    with pytest.raises(provisioning.ProvisioningError, match="locked") as caught:
        provisioning.ensure_ready(jane, cluster)
    assert caught.value.code == "locked"
    assert fake.calls == []


# --- one worker at a time ---------------------------------------------------------------------------


def claimed_row(user, cluster, **fields) -> ClusterAccount:
    return ClusterAccount.objects.create(
        account=posix.ensure_account(user),
        cluster=cluster,
        busy_until=timezone.now() + timedelta(minutes=5),
        **fields,
    )


def test_a_second_caller_waits_and_then_gets_the_other_workers_result(jane, cluster, fake, monkeypatch):
    row = claimed_row(jane, cluster)

    def other_worker_finishes(seconds):
        ClusterAccount.objects.filter(pk=row.pk).update(state=State.READY, busy_until=None)

    monkeypatch.setattr(provisioning, "_sleep", other_worker_finishes)
    assert provisioning.ensure_ready(jane, cluster).state == State.READY
    assert fake.calls == []


def test_a_caller_that_waits_too_long_is_told_to_come_back(jane, cluster, fake):
    claimed_row(jane, cluster)
    with pytest.raises(provisioning.ProvisioningBusy, match=r"being set up .* right now"):
        provisioning.ensure_ready(jane, cluster, wait=0.3)
    assert fake.calls == []


def test_a_crashed_workers_claim_expires(jane, cluster, fake):
    row = claimed_row(jane, cluster)
    ClusterAccount.objects.filter(pk=row.pk).update(busy_until=timezone.now() - timedelta(seconds=1))
    assert provisioning.ensure_ready(jane, cluster).state == State.READY


@pytest.mark.postgres
def test_concurrent_calls_run_the_steps_once(transactional_db, uid_range, cluster, fake, monkeypatch):
    # SQLite's in-memory test database answers concurrent threads with "table is locked".
    require(connection.vendor == "postgresql", "row locks between threads need PostgreSQL (DATABASE_URL)")
    jane = User.objects.create(username="jane", email="jane@corp.example")
    fake.slow = 0.5

    def slow_now():
        # Widens the gap between reading the claim and writing it, where a missing lock would show.
        time.sleep(0.05)
        return timezone.now()

    monkeypatch.setattr(provisioning, "timezone", SimpleNamespace(now=slow_now))
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def call():
        try:
            barrier.wait()
            provisioning.ensure_ready(jane, cluster)
        except BaseException as e:
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [c[0] for c in fake.calls].count("useradd") == 1
    assert row_of(jane, cluster).state == State.READY


# --- slurm_for: the gate in front of every Slurm token -------------------------------------------


def test_slurm_for_provisions_on_first_use_and_acts_as_the_posix_user(jane, cluster, fake):
    client = slurm_for(jane, cluster)
    assert client.user_name == "jane"
    assert row_of(jane, cluster).state == State.READY
    fake.calls.clear()
    slurm_for(jane, cluster)
    assert fake.calls == []


def test_slurm_for_refuses_an_inactive_person_and_audits_it(jane, cluster, fake):
    jane.is_active = False
    jane.save()
    with pytest.raises(SlurmAccessRefused, match="deactivated") as caught:
        slurm_for(jane, cluster)
    assert caught.value.code == "inactive"
    event = AuditEvent.objects.get(action="slurm.token_refused")
    assert (event.outcome, event.reason, event.cluster) == ("denied", "inactive", "c1")


def test_slurm_for_refuses_an_account_that_is_not_ready_when_told_not_to_provision(jane, cluster, fake):
    with pytest.raises(SlurmAccessRefused) as caught:
        slurm_for(jane, cluster, provision=False)
    assert caught.value.code == "not_ready"
    assert fake.calls == []


def test_slurm_for_refuses_a_locked_account(jane, cluster, fake):
    ClusterAccount.objects.create(account=posix.ensure_account(jane), cluster=cluster, state=State.LOCKED)
    with pytest.raises(SlurmAccessRefused) as caught:
        slurm_for(jane, cluster)
    assert caught.value.code == "locked"


def test_slurm_for_passes_on_the_clusters_own_refusal(jane, cluster, fake):
    # A name the cluster never mints for (its SlurmUser) is refused even for a ready account.
    account = posix.ensure_account(jane)
    ClusterAccount.objects.create(account=account, cluster=cluster, state=State.READY)
    cluster.slurm_user = account.username
    cluster.save()
    tokens.forget()
    with pytest.raises(SlurmAccessRefused) as caught:
        slurm_for(jane, cluster)
    assert caught.value.code == "token_refused"


# --- for real: a Linux user on this machine, a Slurm association, a job that runs as them -------
# `real_person` comes from tests/accounts/conftest.py. The tests that use Slurm run on each release
# (tests/conftest.py, every_release): the association is made on that release's cluster.


def wait_for_job(client, job_id, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = client.job(job_id)
        if job.is_finished:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish within {seconds} s")


@pytest.mark.root
@pytest.mark.slurm
@pytest.mark.every_release
def test_it_creates_a_real_user_whose_jobs_run_under_the_allocated_uid(real_person, demo_cluster, slurm_env):
    account = posix.ensure_account(real_person)
    name, uid = account.username, account.uid

    row = provisioning.ensure_ready(real_person, demo_cluster)
    assert row.state == State.READY

    entry = subprocess.run(["getent", "passwd", name], capture_output=True, text=True, check=True).stdout
    fields = entry.strip().split(":")
    assert fields[2:4] == [str(uid), str(uid)]
    home = Path(fields[5])
    assert home == Path("/home") / name
    assert fields[6] == "/bin/bash"
    assert home.stat().st_uid == uid
    if slurm_env.accounting:
        assoc = sacctmgr("-n", "-P", "show", "assoc", f"user={name}", "format=cluster,account,user")
        assert f"{slurm_env.cluster_name}|demo|{name}" in assoc.splitlines()

    client = slurm_for(real_person, demo_cluster)
    marker = home / "ct-uid"
    submitted = client.submit(
        JobSpec(
            script=f"#!/bin/sh\nid -u > {marker}\n",
            working_directory=str(home),
            name="ct-provisioning",
            partition="debug",
            time_limit=1,
        )
    )
    job = wait_for_job(client, submitted.job_id)
    assert job.state == "COMPLETED", job
    assert job.user_name == name
    assert marker.read_text().strip() == str(uid)
    assert marker.stat().st_uid == uid


def sacctmgr(*args: str) -> str:
    """sacctmgr of the release under test, as root."""
    done = subprocess.run(
        [slurm_commands.command("sacctmgr"), *args], capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.fixture
def second_slurm_cluster(slurm_env):
    """Another Slurm cluster in the same slurmdbd, carrying the same account, as sites that share one have."""
    require(slurm_env.accounting, "the local Slurm runs without slurmdbd (SLURM_DEMO_ACCOUNTING=0)")
    name = f"ctother{os.getpid()}"
    sacctmgr("-i", "add", "cluster", name)
    try:
        sacctmgr("-i", "add", "account", "demo", f"cluster={name}")
        yield name
    finally:
        sacctmgr("-i", "delete", "cluster", name)


@pytest.mark.root
@pytest.mark.slurm
@pytest.mark.every_release
def test_the_association_is_made_on_this_slurm_cluster_only(
    real_person, demo_cluster, slurm_env, second_slurm_cluster
):
    name = posix.ensure_account(real_person).username

    assert provisioning.ensure_ready(real_person, demo_cluster).state == State.READY

    rows = sacctmgr("-n", "-P", "show", "assoc", f"user={name}", "format=cluster,account,user").splitlines()
    # Before cluster= was passed, sacctmgr also added the person on ctother…, a cluster nobody granted them.
    assert rows == [f"{slurm_env.cluster_name}|demo|{name}"]
    details = AuditEvent.objects.get(action="provisioning.association").details
    assert details["slurm_cluster"] == slurm_env.cluster_name


@pytest.mark.root
def test_a_real_home_is_0700_and_another_person_cannot_read_it(real_person):
    here = Cluster.objects.create(
        slug="here", name="This host", slurmrestd_url="http://127.0.0.1:9", has_accounting=False
    )
    other = User.objects.create(username=ct_email(), email=ct_email())
    other_account = posix.ensure_account(other)
    other_name = other_account.username
    # A home made before the user (by an admin, or left by an earlier userdel): useradd keeps its mode.
    other_home = Path("/home") / other_name
    other_home.mkdir(mode=0o755)
    os.chown(other_home, other_account.uid, other_account.gid)
    try:
        provisioning.ensure_ready(real_person, here)
        provisioning.ensure_ready(other, here)
        home = Path("/home") / posix.ensure_account(real_person).username
        assert (stat.S_IMODE(home.stat().st_mode), stat.S_IMODE(other_home.stat().st_mode)) == (0o700, 0o700)
        peek = subprocess.run(
            ["runuser", "-u", other_name, "--", "ls", str(home)], capture_output=True, text=True, check=False
        )
        assert peek.returncode != 0
        assert "Permission denied" in peek.stderr, peek.stderr
        print(f"homes private: new and pre-existing homes 0700; another person's ls: {peek.stderr.strip()}")
    finally:
        remove_linux_user(other_name)
        shutil.rmtree(other_home, ignore_errors=True)


@pytest.mark.root
def test_a_real_name_clash_on_this_host_is_reported_not_overwritten(real_person, settings):
    # Someone made "ctdaemon" by hand on the head node: the account must not take it over.
    local = Cluster.objects.create(
        slug="here", name="This host", slurmrestd_url="http://127.0.0.1:9", has_accounting=False
    )
    account = posix.ensure_account(real_person)
    account.username = "ctdaemon"
    account.save()
    subprocess.run(["useradd", "--no-log-init", "-M", "-u", str(account.uid + 1), "ctdaemon"], check=True)
    try:
        with pytest.raises(provisioning.ProvisioningError, match="named ctdaemon already exists there"):
            provisioning.ensure_ready(real_person, local)
        assert subprocess.run(["id", "-u", "ctdaemon"], capture_output=True, text=True).stdout.strip() == str(
            account.uid + 1
        )
    finally:
        remove_linux_user("ctdaemon")


@pytest.mark.root
@pytest.mark.slurm
@pytest.mark.every_release
def test_a_name_the_real_slurm_already_knows_is_refused_before_a_linux_user_is_made(
    real_person, demo_cluster, slurm_env
):
    require(slurm_env.accounting, "needs slurmdbd")
    name = posix.ensure_account(real_person).username
    # Someone's Slurm identity from before the console: an operator, with the demo account.
    sacctmgr(
        "-i", "add", "user", name, "account=demo", f"cluster={slurm_env.cluster_name}", "adminlevel=Operator"
    )
    try:
        with pytest.raises(provisioning.ProvisioningError) as refused:
            provisioning.ensure_ready(real_person, demo_cluster)
        assert refused.value.code == "slurm_user_taken"
        assert subprocess.run(["getent", "passwd", name], capture_output=True).returncode == 2
    finally:
        sacctmgr("-i", "delete", "user", f"name={name}")


@pytest.mark.root
@pytest.mark.slurm
@pytest.mark.every_release
def test_a_uid_a_former_slurm_user_still_holds_is_named_in_the_refusal(
    real_person, demo_cluster, slurm_env, slurm_release
):
    require(slurm_env.accounting, "needs slurmdbd")
    account = posix.ensure_account(real_person)
    # Someone had this UID before: a Slurm user once, whose Linux user was removed and Slurm user was not.
    departed = f"{account.username}x"
    subprocess.run(["useradd", "--no-log-init", "-M", "-N", "-u", str(account.uid), departed], check=True)
    try:
        sacctmgr("-i", "add", "user", departed, "account=demo", f"cluster={slurm_env.cluster_name}")
    finally:
        subprocess.run(["userdel", departed], check=True)
    try:
        if slurm_release == "22.05":
            # 22.05 gives the UID a second name.
            assert provisioning.ensure_ready(real_person, demo_cluster).state == State.READY
            return
        # 24.11 and 26.05 keep the UID and refuse the new name, in words that blame the account.
        with pytest.raises(provisioning.ProvisioningError) as refused:
            provisioning.ensure_ready(real_person, demo_cluster)
        assert (refused.value.code, refused.value.step) == ("slurm_uid_taken", "association")
        assert f"Slurm already has a user {departed} with UID {account.uid}" in refused.value.message
    finally:
        sacctmgr("-i", "delete", "user", f"name={departed}")
