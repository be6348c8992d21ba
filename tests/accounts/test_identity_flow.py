"""Issue 3's promise end to end: IdP sign-in → a POSIX account made just in time → a job run as that
person → offboarding leaves them able to do nothing. Every part is real: the IdP, useradd, sacctmgr,
slurmrestd and the job, on each Slurm release (tests/conftest.py, every_release)."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import time

import pytest

from accounts import api_tokens, offboarding
from accounts.models import ClusterAccount, User
from accounts.slurm_access import SlurmAccessRefused, slurm_for
from clusters.slurm import JobSpec
from tests.conftest import require
from tests.support import slurm_commands
from tests.support.fake_headnode import free_uid_block, remove_linux_user
from tests.support.fixtures_idp import sign_in

pytestmark = [
    pytest.mark.idp,
    pytest.mark.slurm,
    pytest.mark.root,
    pytest.mark.django_db,
    pytest.mark.every_release,
]


@pytest.fixture
def newcomer(idp, settings):
    """Someone the IdP knows and this machine has never seen."""
    require(os.geteuid() == 0, "needs root to create Linux users")
    start = free_uid_block()
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = start, start + 19
    login = f"ct{secrets.token_hex(4)}"
    idp.users[login] = {
        "password": f"{login}-pw",
        "claims": {
            "email": f"{login}@example.org",
            "email_verified": True,
            "name": "New Comer",
            "preferred_username": login,
            "groups": ["hpc-users"],
        },
    }
    idp._write()
    yield login
    remove_linux_user(login)


def association_account(name: str) -> str:
    answer = subprocess.run(
        [slurm_commands.command("sacctmgr"), "-n", "-P", "show", "assoc", f"user={name}", "format=account"],
        capture_output=True,
        text=True,
        check=True,
    )
    return answer.stdout.strip()


def test_a_person_from_the_idp_runs_a_job_as_themselves_until_offboarded(client, newcomer, demo_cluster):
    signed_in = sign_in(client, newcomer, f"{newcomer}-pw")
    assert signed_in.console.status_code == 302
    person = User.objects.get(email=f"{newcomer}@example.org")
    assert set(person.groups.values_list("name", flat=True)) == {"hpc-users"}
    account = person.posix_account
    assert account.username == newcomer
    with pytest.raises(KeyError):
        pwd.getpwnam(newcomer)  # nothing on the cluster until it is needed

    slurm = slurm_for(person, demo_cluster)

    entry = pwd.getpwnam(newcomer)
    assert (entry.pw_uid, entry.pw_gid, entry.pw_dir) == (account.uid, account.gid, f"/home/{newcomer}")
    assert association_account(newcomer) == demo_cluster.slurm_account
    assert ClusterAccount.objects.get(account=account, cluster=demo_cluster).state == "ready"
    out = f"/home/{newcomer}/whoami.out"
    job_id = slurm.submit(
        JobSpec(
            script=f"#!/bin/sh\nid -u > {out}\n",
            working_directory=f"/home/{newcomer}",
            name="ct-whoami",
            time_limit=1,
        )
    ).job_id
    deadline = time.monotonic() + 30
    while not slurm.job(job_id).is_finished and time.monotonic() < deadline:
        time.sleep(0.2)
    with open(out) as f:
        assert f.read().strip() == str(account.uid)
    _, raw_token = api_tokens.issue(person, name="laptop")
    assert api_tokens.authenticate(raw_token) == person

    offboarding.offboard(person, reason="left the company")

    with pytest.raises(SlurmAccessRefused):
        slurm_for(person, demo_cluster)
    assert api_tokens.authenticate(raw_token) is None
    status = subprocess.run(["passwd", "-S", newcomer], capture_output=True, text=True, check=True).stdout
    assert status.split()[1] == "L"
    client.logout()
    again = sign_in(client, newcomer, f"{newcomer}-pw")
    assert again.console.status_code == 403
    assert b"deactivated" in again.console.content
