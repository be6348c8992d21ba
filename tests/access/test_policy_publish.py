"""The policy reaches the head node whenever what it holds changes, and only then; a failure is kept."""

from __future__ import annotations

import grp
import os
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from access import snapshot
from access.models import Grant, Publication, Quota
from accounts.models import PosixAccount, User
from audit.models import AuditEvent
from clusters.models import Cluster
from tests.conftest import require

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cluster(tmp_path):
    require(os.geteuid() == 0, "publishing sets the policy file's owner: needs root")
    # The file's group is SlurmUser's; here the machine's own root group stands in for it.
    return Cluster.objects.create(
        slug="c1",
        name="Cluster One",
        slurmrestd_url="http://127.0.0.1:9",
        enforce_policy=True,
        slurm_user=grp.getgrgid(0).gr_name,
        policy_path=str(tmp_path / "clusterra" / "policy.lua"),
        refusal_log=str(tmp_path / "refusals.log"),
    )


@pytest.fixture
def jane(settings):
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = 200000, 200099
    user = User.objects.create(username="jane")
    PosixAccount.objects.create(user=user, username="jane", uid=200001, gid=200001)
    return user


def published(cluster: Cluster) -> tuple[int, str]:
    row = Publication.objects.get(cluster=cluster)
    return row.version, open(cluster.policy_path).read()


def test_every_change_of_what_it_holds_publishes_a_new_version(cluster, jane):
    team = Group.objects.create(name="ml-team")
    Grant.objects.create(cluster=cluster, group=team, partitions="debug")
    version, text = published(cluster)
    assert "[200001]" not in text  # not in the group yet

    jane.groups.add(team)
    version, text = published(cluster)
    assert '[200001]={["name"]="jane"' in text
    assert re.match(rf"-- clusterra policy v{version} generated \d+ sha256:[0-9a-f]{{16}}\n", text)

    Quota.objects.create(cluster=cluster, group=team, cpu_hours=10)
    assert published(cluster)[0] == version + 1

    jane.is_active = False
    jane.save()
    version, text = published(cluster)
    assert '["inactive"]=true' in text

    # A save that changes nothing writes nothing.
    jane.save()
    Grant.objects.get(cluster=cluster, group=team).save()
    assert published(cluster)[0] == version
    assert os.stat(cluster.policy_path).st_mode & 0o777 == 0o640
    assert os.stat(os.path.dirname(cluster.policy_path)).st_mode & 0o777 == 0o750


def test_a_head_node_that_does_not_take_it_keeps_the_change_and_says_why(cluster, jane):
    before = published(cluster)[0]
    cluster.policy_path = "/proc/clusterra/policy.lua"  # nobody can make a folder there
    cluster.save()
    grant = Grant.objects.create(cluster=cluster, user=jane, partitions="debug")
    assert Grant.objects.filter(pk=grant.pk).exists()
    row = Publication.objects.get(cluster=cluster)
    assert row.version == before
    assert "install" in row.error
    failed = AuditEvent.objects.filter(action="policy.publish", outcome="error").last()
    assert failed is not None
    assert "could not be written" in failed.message


def test_a_running_console_writes_again_before_the_snapshot_could_grow_old(cluster, jane):
    Grant.objects.create(cluster=cluster, user=jane, partitions="debug")
    version, _ = published(cluster)
    long_ago = timezone.now() - snapshot.HEARTBEAT
    Publication.objects.filter(cluster=cluster).update(published_at=long_ago)
    snapshot.publish(cluster)
    row = Publication.objects.get(cluster=cluster)
    assert row.version == version  # the same rules, written again with a new "generated" moment
    assert row.published_at > long_ago + timedelta(seconds=1)


def test_refusals_from_before_the_console_governed_the_cluster_are_not_audited(cluster, jane):
    log = cluster.refusal_log
    line = '{"time": 1, "uid": 200001, "user": "jane", "code": "no_grant", "message": "old", "version": 0}\n'
    with open(log, "w") as f:
        f.write(line)
    Publication.objects.all().delete()  # as if the console had never published to this head node
    Grant.objects.create(cluster=cluster, user=jane, partitions="debug")  # its first publish
    assert snapshot.collect_refusals(cluster) == 0
    with open(log, "a") as f:
        f.write(line.replace('"old"', '"new"'))
    assert snapshot.collect_refusals(cluster) == 1
    assert AuditEvent.objects.get(action="job.refused_by_slurm").message.endswith("new")
