"""Helpers for the jobs, API, sync and CLI tests: real people on the real Slurm, their scripts, the queue."""

from __future__ import annotations

import io
import os
import pwd
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from django.core.management import call_command

from access.models import Grant, Quota
from accounts import api_tokens, posix, provisioning
from accounts.models import PosixAccount, User
from clusters.models import Cluster
from jobs.models import JobRecord
from tests.support import slurm_commands
from tests.support.fake_headnode import ct_email


@dataclass
class Person:
    """A console user with a real Linux account on this machine and a token for /v1."""

    user: User
    name: str
    uid: int
    home: Path
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.token}"}

    def script(self, name: str, text: str, *, mode: int = 0o755, owner: int | None = None) -> str:
        """Write a script into the person's home, owned by them (or by `owner`), and return its path."""
        path = self.home / name
        path.write_text(text)
        os.chown(path, owner if owner is not None else self.uid, owner if owner is not None else self.uid)
        path.chmod(mode)
        return str(path)


def make_person(
    cluster: Cluster, *, grant: bool = True, quota: dict | None = None, slot: tuple[str, int] | None = None
) -> Person:
    """A person provisioned for real (Linux user, home, Slurm association), with a grant on `cluster`.

    With `slot` (name, UID) the POSIX account is that one, so a Linux user left by an
    earlier test is found and reused instead of made again.
    """
    email = f"{slot[0]}@clusterra.test" if slot else ct_email()
    user = User.objects.create(username=email, email=email)
    if slot:
        PosixAccount.objects.create(user=user, username=slot[0], uid=slot[1], gid=slot[1])
    account = posix.ensure_account(user)
    provisioning.ensure_ready(user, cluster)
    if grant:
        Grant.objects.create(cluster=cluster, user=user, all_partitions=True, terminal=True)
    if quota is not None:
        Quota.objects.create(cluster=cluster, user=user, **quota)
    _, token = api_tokens.issue(user, name="tests")
    entry = pwd.getpwnam(account.username)
    return Person(user, account.username, account.uid, Path(entry.pw_dir), token)


def sbatch_as(name: str, *args: str) -> int:
    """sbatch of the release under test, as `name` would type it in a terminal."""
    out = subprocess.run(
        ["runuser", "-u", name, "--", slurm_commands.command("sbatch"), "--parsable", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd="/tmp",
    ).stdout
    return int(out.strip().split(";")[0])


def squeue(name: str) -> list[str]:
    """Job ids Slurm holds for a user, as root sees them (PrivateData does not hide them from root).

    The release the test runs on answers (tests/support/slurm_commands.py), as for the helpers below.
    """
    out = subprocess.run(
        [slurm_commands.command("squeue"), "-h", "-u", name, "-o", "%i"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def slurm_jobs_of(uid: int) -> set[str]:
    """Every job id of this UID that Slurm holds or recorded lately (queue and accounting, as root).

    By UID, and compared before/after, because test UIDs are reused: accounting still
    holds jobs of an earlier test's user with the same number.
    """
    queue = subprocess.run(
        [slurm_commands.command("squeue"), "-h", "-a", "-o", "%i %U"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ids = {line.split()[0] for line in queue.splitlines() if line.split()[1:] == [str(uid)]}
    acct = subprocess.run(
        [slurm_commands.command("sacct"), "-a", "-n", "-X", "-P", "-S", "now-1hour", "-o", "JobID,UID"],
        capture_output=True,
        text=True,
    ).stdout
    ids |= {line.split("|")[0] for line in acct.splitlines() if line.split("|")[1:] == [str(uid)]}
    return ids


def assert_matches(schema_name: str, instance: dict) -> None:
    """The answer has exactly the shape the published OpenAPI document promises."""
    from openapi_schema_validator import OAS31Validator

    from clusterra_site.api import document

    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document()["components"]}
    OAS31Validator(schema).validate(instance)


class SlurmWatch:
    """Proves that nothing reached Slurm for one person between its creation and `new_jobs()`."""

    def __init__(self, person: Person) -> None:
        self.uid = person.uid
        self.before = slurm_jobs_of(person.uid)

    def new_jobs(self) -> set[str]:
        return slurm_jobs_of(self.uid) - self.before


def sync_until(record: JobRecord, states: set[str], seconds: float = 30) -> JobRecord:
    """Run `sync_jobs --once` until the record reaches one of `states` (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        call_command("sync_jobs", "--once", stdout=io.StringIO())
        record.refresh_from_db()
        if record.state in states:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job {record.slurm_job_id} is {record.state}, not {states}, after {seconds} s"
            )
        time.sleep(0.3)


HELLO = (
    "#!/bin/bash\n#SBATCH --job-name=ct-hello\n#SBATCH --time=2\n#SBATCH --partition=debug\n"
    "echo hello from $(id -un)\necho oops >&2\n"
)
