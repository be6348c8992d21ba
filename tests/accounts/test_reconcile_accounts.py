"""`manage.py reconcile_accounts`: finishes provisioning, locks what offboarding could not, closes homes."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts import offboarding, posix, provisioning
from accounts.models import ClusterAccount, User
from audit.models import AuditEvent
from clusters.headnode import Result as R
from clusters.models import Cluster
from tests.conftest import require
from tests.support.fake_headnode import ct_email, free_uid_block, remove_linux_user

State = ClusterAccount.State


@pytest.fixture
def clusters(db, settings):
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = 60100, 60199
    return [
        Cluster.objects.create(
            slug=slug, name=slug.upper(), slurmrestd_url="http://127.0.0.1:9", jwt_key_ref="/x"
        )
        for slug in ("c1", "c2")
    ]


def person(name: str) -> User:
    return User.objects.create(username=name, email=f"{name}@corp.example")


def reconcile(*args) -> str:
    out = StringIO()
    call_command("reconcile_accounts", *args, stdout=out)
    return out.getvalue()


def state(user: User, cluster: Cluster) -> str:
    return ClusterAccount.objects.get(account__user=user, cluster=cluster).state


def test_it_finishes_a_run_that_failed_and_one_that_never_started(clusters, fake):
    c1, _ = clusters
    jane, bob = person("jane"), person("bob")
    fake.down = True
    with pytest.raises(provisioning.ProvisioningError):
        provisioning.ensure_ready(jane, c1)
    fake.down = False
    ClusterAccount.objects.create(account=posix.ensure_account(bob), cluster=c1)

    output = reconcile()

    assert "jane on c1: failed → ready" in output
    assert "bob on c1: pending → ready" in output
    assert "2 account(s) needed work, 0 could not be finished." in output
    assert state(jane, c1) == state(bob, c1) == State.READY


def test_ready_and_locked_accounts_are_left_alone(clusters, fake):
    c1, c2 = clusters
    jane = person("jane")
    provisioning.ensure_ready(jane, c1)
    ClusterAccount.objects.create(account=posix.ensure_account(jane), cluster=c2, state=State.LOCKED)
    fake.calls.clear()
    assert "0 account(s) needed work" in reconcile()
    # Only the look at the people's group and the one for open homes on c1, where a Linux user was made.
    assert fake.programs() == ["getent group", "find"]


def test_an_account_made_before_the_peoples_group_joins_it(clusters, fake):
    c1, _ = clusters
    jane, bob = person("jane"), person("bob")
    for someone in (jane, bob):
        provisioning.ensure_ready(someone, c1)
    fake.members[posix.PEOPLE_GROUP].discard("jane")  # as an account made before the group existed

    output = reconcile()

    assert "jane on c1: joined clusterra-people" in output
    assert "bob on c1: joined" not in output
    assert fake.members[posix.PEOPLE_GROUP] == {"jane", "bob"}
    assert AuditEvent.objects.get(action="provisioning.people_group").target == "jane"
    assert "0 account(s) needed work" in reconcile()


def test_it_locks_what_offboarding_could_not_reach(clusters, fake):
    c1, _ = clusters
    jane = person("jane")
    provisioning.ensure_ready(jane, c1)
    fake.down = True
    assert not offboarding.offboard(jane, reason="left").ok
    fake.down = False

    output = reconcile()

    assert "jane on c1: jane locked on c1" in output
    assert state(jane, c1) == State.LOCKED
    assert "jane" in fake.locked


def test_an_account_whose_person_was_deleted_is_locked(clusters, fake):
    c1, _ = clusters
    jane = person("jane")
    provisioning.ensure_ready(jane, c1)
    account = posix.ensure_account(jane)
    jane.delete()
    reconcile()
    assert ClusterAccount.objects.get(account=account).state == State.LOCKED


def test_only_the_named_cluster_is_touched(clusters, fake):
    c1, _ = clusters
    jane = person("jane")
    for cluster in clusters:
        ClusterAccount.objects.create(account=posix.ensure_account(jane), cluster=cluster)
    output = reconcile("--cluster", "c2")
    assert "jane on c2: pending → ready" in output
    assert "c1" not in output
    assert state(jane, c1) == State.PENDING


def test_an_unknown_cluster_is_an_error(clusters):
    with pytest.raises(CommandError, match="No cluster has the slug 'nope'"):
        reconcile("--cluster", "nope")


def test_what_still_fails_is_printed_and_makes_the_command_fail(clusters, fake):
    c1, _ = clusters
    jane = person("jane")
    ClusterAccount.objects.create(account=posix.ensure_account(jane), cluster=c1)
    fake.passwd["jane"] = 1234
    out = StringIO()
    with pytest.raises(CommandError, match="1 account"):
        call_command("reconcile_accounts", stdout=out)
    assert "jane on c1: pending → failed: " in out.getvalue()
    assert "UID 1234" in out.getvalue()


def test_an_account_being_provisioned_right_now_is_skipped(clusters, fake):
    c1, _ = clusters
    jane = person("jane")
    ClusterAccount.objects.create(
        account=posix.ensure_account(jane), cluster=c1, busy_until=timezone.now() + timedelta(minutes=5)
    )
    assert "jane on c1: skipped, being provisioned right now" in reconcile()
    assert fake.calls == []


def test_the_admin_retry_action_resumes_a_failed_row(admin_client, clusters, fake):
    c1, _ = clusters
    jane = person("jane")
    fake.down = True
    with pytest.raises(provisioning.ProvisioningError):
        provisioning.ensure_ready(jane, c1)
    fake.down = False
    row = ClusterAccount.objects.get(account__user=jane)
    response = admin_client.post(
        "/admin/accounts/clusteraccount/",
        {"action": "retry_provisioning", "_selected_action": [row.pk]},
        follow=True,
    )
    # The admin capitalises messages.
    assert "Jane is ready on c1." in response.content.decode()
    assert state(jane, c1) == State.READY


def test_an_open_home_is_made_0700_and_audited(clusters, fake):
    c1, _ = clusters
    jane, bob = person("jane"), person("bob")
    for someone in (jane, bob):
        provisioning.ensure_ready(someone, c1)
    fake.modes["/home/jane"] = 0o755  # made before homes were private
    fake.modes["/home/alice"] = 0o755  # not the console's: left as it is

    output = reconcile()

    assert "jane on c1: home /home/jane was 755, now 700" in output
    assert "bob" not in output
    assert "1 account(s) needed work, 0 could not be finished." in output
    assert fake.modes == {"/home/jane": 0o700, "/home/bob": 0o700, "/home/alice": 0o755}
    event = AuditEvent.objects.get(action="provisioning.home")
    assert (event.actor_name, event.cluster, event.target, event.outcome) == (
        "reconcile_accounts",
        "c1",
        "jane",
        "allowed",
    )
    assert event.details == {"home": "/home/jane", "mode": "755"}
    assert "0 account(s) needed work" in reconcile()


def test_a_home_that_stays_open_makes_the_command_fail(clusters, fake):
    c1, _ = clusters
    provisioning.ensure_ready(person("jane"), c1)
    fake.modes["/home/jane"] = 0o755
    fake.broken["chmod"] = R(1, "", "chmod: changing permissions of '/home/jane': Operation not permitted")
    out = StringIO()
    with pytest.raises(CommandError, match="1 account"):
        call_command("reconcile_accounts", stdout=out)
    assert "jane on c1: home /home/jane is still 755: chmod: changing permissions" in out.getvalue()
    assert AuditEvent.objects.get(action="provisioning.home").outcome == "error"


@pytest.mark.root
def test_a_real_open_home_is_closed(db, settings):
    require(os.geteuid() == 0, "needs root to create Linux users")
    start = free_uid_block()
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = start, start + 19
    here = Cluster.objects.create(
        slug="here", name="This host", slurmrestd_url="http://127.0.0.1:9", has_accounting=False
    )
    someone = User.objects.create(username=ct_email(), email=ct_email())
    name = posix.ensure_account(someone).username
    home = Path("/home") / name
    try:
        provisioning.ensure_ready(someone, here)
        home.chmod(0o755)

        output = reconcile("--cluster", "here")

        assert f"{name} on here: home {home} was 755, now 700" in output
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        print(f"homes private: reconcile_accounts closed an open home ({name}: 755 → 700)")
    finally:
        remove_linux_user(name)
