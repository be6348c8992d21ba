"""`manage.py seed_demo`: the demo group, its grant and quota, made once; a second run changes nothing."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.utils import timezone

from access.demo import PERSON_QUOTA_NOTE
from access.models import Grant, Quota, QuotaChange
from accounts.models import DemoMember, IdpGroup, User
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def snapshot() -> tuple:
    return (
        list(Group.objects.values_list("pk", "name")),
        list(Grant.objects.values_list("pk", "partitions", "terminal", "updated")),
        list(Quota.objects.values_list("pk", "max_walltime", "updated")),
        QuotaChange.objects.count(),
        AuditEvent.objects.count(),
    )


def test_it_creates_the_group_its_grant_and_quota(signup_cluster):
    out = seed("--cluster", "demo")

    group = Group.objects.get(name="demo")
    assert not IdpGroup.objects.filter(group=group).exists()
    grant = Grant.objects.get(cluster=signup_cluster, group=group)
    assert (grant.partition_names, grant.terminal, grant.all_partitions) == (["debug"], True, False)
    quota = Quota.objects.get(cluster=signup_cluster, group=group)
    assert quota.max_walltime == 10
    assert "Granted group demo partition debug and the terminal on demo." in out
    assert AuditEvent.objects.filter(action="demo.seeded").count() == 3


def test_running_it_twice_changes_nothing(signup_cluster):
    seed("--cluster", "demo")
    before = snapshot()

    out = seed("--cluster", "demo")

    assert snapshot() == before
    assert "already set up; nothing changed" in out


def test_it_keeps_an_administrators_edits_unless_reset(signup_cluster):
    seed("--cluster", "demo")
    quota = Quota.objects.get(group__name="demo")
    quota.max_walltime = 30
    quota.save(changed_by="admin")

    kept = seed("--cluster", "demo")
    assert "Kept the quota of group demo as it is (max_walltime is 30, settings say 10)" in kept
    assert Quota.objects.get(pk=quota.pk).max_walltime == 30

    seed("--cluster", "demo", "--reset")
    assert Quota.objects.get(pk=quota.pk).max_walltime == 10


def test_it_follows_the_settings(signup_cluster, demo_settings):
    demo_settings.CLUSTERRA_DEMO_PARTITION = "short"
    demo_settings.CLUSTERRA_DEMO_MAX_WALLTIME = 5
    seed()  # the cluster comes from CLUSTERRA_DEMO_CLUSTER
    assert Grant.objects.get(group__name="demo").partition_names == ["short"]
    assert Quota.objects.get(group__name="demo").max_walltime == 5


def test_it_gives_members_added_by_hand_their_own_quota(signup_cluster):
    seed("--cluster", "demo")
    ann = User.objects.create(username="ann", email="ann@example.org")
    ann.groups.add(Group.objects.get(name="demo"))
    DemoMember.objects.create(user=ann, via="account", cluster=signup_cluster, expires=timezone.now())
    assert "Gave ann their own demo quota on demo." in seed("--cluster", "demo")
    assert Quota.objects.get(user=ann).note == PERSON_QUOTA_NOTE


def test_it_refuses_an_idp_managed_group_of_that_name(signup_cluster):
    group = Group.objects.create(name="demo")
    IdpGroup.objects.create(group=group, provider="okta", claim_value="demo")
    with pytest.raises(CommandError, match="managed by an identity provider"):
        seed("--cluster", "demo")
    assert not Grant.objects.exists()


def test_it_needs_a_registered_cluster(db, demo_settings):
    with pytest.raises(CommandError, match="register_cluster first"):
        seed("--cluster", "nowhere")


def test_it_says_when_the_signup_is_not_pointed_at_this_cluster(signup_cluster, demo_settings):
    demo_settings.CLUSTERRA_DEMO_CLUSTER = ""
    assert "set it to 'demo' to open the demo" in seed("--cluster", "demo")
