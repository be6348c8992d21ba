"""On an SSM head node a submit asks the head node once: the script read and the working directory together.

Every SendCommand is a round trip through AWS (a second or more), so jobs.scripts sends the read and the
request's working-directory check as one command (READ_WITH_DIRECTORY). These tests stand in for the
instance by running each command on this host, through runuser as a real Linux user, exactly as the SSM
document would run it: what counts is how many commands one submit sends, and that their answers keep
every sentence of the separate read and check.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from clusters import headnode
from clusters.models import Cluster
from clusters.slurm import Partition
from jobs import plan as plans
from jobs import scripts
from jobs.scripts import ScriptError
from jobs.submit_request import SubmitRequest
from tests.conftest import require

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(db) -> Cluster:
    """This host, where the `owner` fixture provisions the person (a real Linux user)."""
    return Cluster.objects.create(
        slug="here",
        name="This host",
        slurmrestd_url="http://127.0.0.1:9",
        jwt_key_ref="/nonexistent",
        has_accounting=False,
        allowed_script_roots="/home\n/srv/ct-scripts",
    )


@pytest.fixture
def far(db) -> Cluster:
    """A head node reached through SSM; `sent` runs its commands on this host instead."""
    return Cluster.objects.create(
        slug="far",
        name="Far away",
        transport="ssm",
        ssm_instance_id="i-0123456789abcdef0",
        aws_region="eu-west-1",
        slurmrestd_url="http://127.0.0.1:9",
        jwt_key_ref="/nonexistent",
        has_accounting=False,
        allowed_script_roots="/home\n/srv/ct-scripts",
    )


@pytest.fixture
def sent(monkeypatch) -> list[list[str]]:
    """Each command the head node is sent, run here as the SSM document would run it (a login-less shell)."""
    require(os.geteuid() == 0, "needs root to run commands as another user")
    commands: list[list[str]] = []

    def instance(cluster, argv, *, timeout=None, input=None):
        commands.append(list(argv))
        line = headnode.ssm_command_line(list(argv), input)
        done = subprocess.run(
            ["sh", "-c", line], capture_output=True, timeout=timeout, env=headnode.LOCAL_ENVIRONMENT, cwd="/"
        )
        return headnode.Result(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode())

    monkeypatch.setattr(headnode, "run", instance)
    return commands


def test_the_script_and_the_working_directory_are_one_command(far, owner, sent):
    path = owner.script("job.sh", "#!/bin/sh\n#SBATCH -t 5\necho far\n", mode=0o600)
    work = owner.home / "work"
    work.mkdir()
    os.chown(work, owner.uid, owner.uid)

    script = scripts.read_as(far, owner.name, path, directory=str(work))

    assert (script.text, script.resolved_path) == ("#!/bin/sh\n#SBATCH -t 5\necho far\n", path)
    assert len(sent) == 1
    assert sent[0][:4] == ["runuser", "-u", owner.name, "--"]
    assert sent[0][-3:] == [path, str(scripts.max_script_bytes() + 1), str(work)]


def test_the_combined_command_keeps_each_refusal(far, owner, sent):
    path = owner.script("job.sh", "#!/bin/sh\necho far\n")
    closed = Path("/srv/ct-scripts") / f"{owner.name}-closed"
    closed.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        with pytest.raises(ScriptError, match="may not enter") as caught:
            scripts.read_as(far, owner.name, path, directory=str(closed))
        assert (caught.value.code, caught.value.status) == ("invalid_workdir", 403)
        with pytest.raises(ScriptError, match="does not exist") as caught:
            scripts.read_as(far, owner.name, path, directory=str(owner.home / "missing"))
        assert caught.value.code == "invalid_workdir"
        # The script's own refusal comes first, as when the two were separate commands.
        secret = owner.script("secret.sh", "#!/bin/sh\n", mode=0o600, owner=0)
        with pytest.raises(ScriptError) as caught:
            scripts.read_as(far, owner.name, secret, directory=str(closed))
        assert (caught.value.code, caught.value.status) == ("script_unreadable", 403)
        with pytest.raises(ScriptError) as caught:
            scripts.read_as(far, owner.name, str(owner.home / "nope.sh"), directory=str(owner.home))
        assert caught.value.code == "script_not_found"
    finally:
        closed.rmdir()
    assert len(sent) == 4


def test_an_account_missing_on_the_head_node_is_said_so(far, sent):
    with pytest.raises(ScriptError) as caught:
        scripts.read_as(far, "ctnosuchuser", "/home/ctnosuchuser/x.sh", directory="/home/ctnosuchuser/w")
    assert (caught.value.code, caught.value.status) == ("account_missing", 502)
    assert len(sent) == 1


@pytest.mark.parametrize("workdir", [None, "work", "the script's folder"])
def test_preparing_a_submit_sends_one_command(far, owner, sent, monkeypatch, workdir):
    monkeypatch.setattr(plans, "_partition", lambda cluster, name: Partition(name="cpu", max_time_limit=60))
    monkeypatch.setattr(plans, "_check_carried", lambda *args: None)  # slurmrestd's part, not the head node's
    path = owner.script("job.sh", "#!/bin/sh\n#SBATCH --time=5\necho far\n")
    (owner.home / "work").mkdir()
    asked = {"work": str(owner.home / "work"), "the script's folder": str(owner.home), None: None}[workdir]

    plan = plans.prepare(far, SubmitRequest(script_path=path, working_directory=asked), owner.name)

    assert plan.spec.working_directory == (asked or str(owner.home))
    assert len(sent) == 1, sent
