"""accounts.offboarding, its admin action and `manage.py offboard`: everything stops at once, and for real."""

from __future__ import annotations

import asyncio
import html
import re
import subprocess
import time
from dataclasses import dataclass, field
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts import api_tokens, offboarding, posix, provisioning
from accounts.models import ClusterAccount, User
from accounts.slurm_access import SlurmAccessRefused, slurm_for
from audit.models import AuditEvent
from clusterra_site import env
from clusters.models import Cluster
from clusters.slurm import Job, JobList, JobSpec, SlurmError
from jobs.models import JobRecord
from terminal.models import TerminalSession
from tests.support import slurm_commands

State = ClusterAccount.State


@pytest.fixture
def cluster(db, tmp_path, settings):
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = 60100, 60199
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    # Jobs are left alone here (nothing answers on port 9); the tests of cancelling say "cancel".
    return Cluster.objects.create(
        slug="c1",
        name="Cluster One",
        slurmrestd_url="http://127.0.0.1:9",
        api_version="v0.0.38",
        jwt_key_ref=str(key),
        offboard_jobs="leave",
    )


@pytest.fixture
def listener(jane):
    """A channel in jane's person group, the way a live terminal joins it."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(offboarding.person_group(jane.pk), channel)
    yield lambda: receive(layer, channel)
    async_to_sync(layer.group_discard)(offboarding.person_group(jane.pk), channel)


def receive(layer, channel, seconds: float = 3.0):
    async def one():
        return await asyncio.wait_for(layer.receive(channel), seconds)

    return async_to_sync(one)()


@dataclass
class FakeSlurm:
    """Stands in for cluster.slurm(): records who it was minted for and what it cancelled."""

    jobs_listed: tuple[Job, ...]
    minted_for: list[tuple] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)

    def __call__(self, user_name, *, uid=None, gid=None):
        self.minted_for.append((user_name, uid, gid))
        return self

    def jobs(self):
        return JobList(jobs=self.jobs_listed)

    def cancel(self, job_id):
        self.cancelled.append(job_id)


def test_it_takes_every_way_in_away_at_once(jane, cluster, fake, listener):
    provisioning.ensure_ready(jane, cluster)
    _, raw = api_tokens.issue(jane)
    admin = User.objects.create(username="boss", email="boss@corp.example", is_staff=True)

    result = offboarding.offboard(jane, by=admin, reason="left the company")

    assert result.ok, result.problems
    jane.refresh_from_db()
    assert not jane.is_active
    assert jane.deactivated_at is not None
    assert jane.deactivated_reason == "left the company"
    assert api_tokens.authenticate(raw) is None
    assert jane.api_tokens.filter(revoked__isnull=True).count() == 0
    assert listener() == {"type": "offboard.close", "reason": "left the company"}
    assert ["usermod", "-L", "-e", "1", "jane"] in fake.calls
    assert fake.calls[-2:] == [
        ["pkill", "-KILL", "-U", "60100"],
        ["pgrep", "-U", "60100", "-r", "D,R,S,T,t,W,P,I"],
    ]
    assert "jane" in fake.locked
    assert ClusterAccount.objects.get(account__user=jane).state == State.LOCKED
    with pytest.raises(SlurmAccessRefused):
        slurm_for(jane, cluster)
    events = AuditEvent.objects.filter(action__startswith="offboard.").order_by("id")
    assert [e.action for e in events] == [
        "offboard.deactivated",
        "offboard.terminals",
        "offboard.slurm",
        "offboard.locked",
        "offboard.jobs",
        "offboard.processes",
        "offboard.finished",
    ]
    assert {e.actor_name for e in events} == {"boss"}


def test_an_account_that_never_reached_the_cluster_is_still_marked_locked(jane, cluster, fake):
    ClusterAccount.objects.create(account=posix.ensure_account(jane), cluster=cluster)
    assert offboarding.offboard(jane, reason="x").ok
    assert ClusterAccount.objects.get(account__user=jane).state == State.LOCKED


def test_an_unreachable_head_node_is_reported_and_the_person_is_still_deactivated(jane, cluster, fake):
    provisioning.ensure_ready(jane, cluster)
    fake.down = True
    result = offboarding.offboard(jane, reason="left")
    assert not result.ok
    assert "association on c1 not blocked" in result.problems[0]
    assert "not locked on c1" in result.problems[1]
    jane.refresh_from_db()
    assert not jane.is_active
    assert ClusterAccount.objects.get(account__user=jane).state == State.READY
    assert AuditEvent.objects.get(action="offboard.finished").outcome == "error"


def test_offboarding_again_finishes_the_job_and_keeps_the_first_date(jane, cluster, fake):
    provisioning.ensure_ready(jane, cluster)
    fake.down = True
    offboarding.offboard(jane, reason="left")
    jane.refresh_from_db()
    first = jane.deactivated_at
    fake.down = False
    assert offboarding.offboard(jane, reason="second try").ok
    jane.refresh_from_db()
    assert jane.deactivated_at == first
    assert jane.deactivated_reason == "left"
    assert ClusterAccount.objects.get(account__user=jane).state == State.LOCKED


def test_jobs_are_left_alone_when_the_cluster_says_so(jane, cluster, fake, monkeypatch):
    provisioning.ensure_ready(jane, cluster)
    Cluster.objects.update(offboard_jobs="leave")
    slurm = FakeSlurm((Job(job_id=1, user_name="jane", state="RUNNING"),))
    monkeypatch.setattr(Cluster, "slurm", lambda self, *a, **k: slurm(*a, **k))
    offboarding.offboard(jane, reason="left")
    assert slurm.minted_for == []
    assert AuditEvent.objects.get(action="offboard.jobs").reason == "leave"


def test_slurm_takes_no_new_job_of_theirs_and_nothing_of_theirs_runs(jane, cluster, fake, monkeypatch):
    provisioning.ensure_ready(jane, cluster)
    uid = posix.ensure_account(jane).uid
    fake.processes[uid] = 3  # a login shell, and what it left behind with setsid
    fake.processes[uid + 1] = 1  # someone else's
    slurm = FakeSlurm(())
    monkeypatch.setattr(Cluster, "slurm", lambda self, *a, **k: slurm(*a, **k))

    result = offboarding.offboard(jane, reason="left")

    assert result.ok, result.problems
    assert fake.blocked == {"jane"}
    assert fake.processes == {uid + 1: 1}
    order = [c[0] if c[0] != "sacctmgr" else f"sacctmgr {c[2]}" for c in fake.calls[-6:]]
    # Slurm blocked before anything else, the account locked before its processes are ended.
    assert order.index("sacctmgr modify") < order.index("usermod") < order.index("pkill")
    assert AuditEvent.objects.get(action="offboard.processes").message == (
        f"no process of jane (UID {uid}) left on c1."
    )
    # A second offboarding finds it all done and says so.
    assert offboarding.offboard(jane, reason="again").ok


def test_a_cluster_set_to_cancel_cancels_the_persons_unfinished_jobs_as_them(
    jane, cluster, fake, monkeypatch
):
    provisioning.ensure_ready(jane, cluster)
    account = posix.ensure_account(jane)
    slurm = FakeSlurm(
        (
            Job(job_id=1, user_name="jane", state="RUNNING"),
            Job(job_id=2, user_name="jane", state="PENDING"),
            Job(job_id=3, user_name="jane", state="COMPLETED"),
            Job(job_id=4, user_name="bob", state="RUNNING"),
        )
    )
    Cluster.objects.update(offboard_jobs="cancel")
    monkeypatch.setattr(Cluster, "slurm", lambda self, *a, **k: slurm(*a, **k))
    result = offboarding.offboard(jane, reason="left")
    assert result.ok
    assert slurm.minted_for == [("jane", account.uid, account.gid)]
    assert slurm.cancelled == [1, 2]
    assert AuditEvent.objects.get(action="offboard.jobs").details == {"cancelled": [1, 2]}


def test_an_unreachable_channel_layer_is_audited_and_everything_else_still_happens(
    jane, cluster, fake, settings
):
    provisioning.ensure_ready(jane, cluster)
    _, raw = api_tokens.issue(jane)
    # Port 9 on loopback: nothing listens, so Redis is "down" without touching the shared one.
    settings.CHANNEL_LAYERS = {"default": env.channel_layer("redis://127.0.0.1:9/0")}

    result = offboarding.offboard(jane, by="test", reason="left")

    jane.refresh_from_db()
    assert not jane.is_active
    assert api_tokens.authenticate(raw) is None
    assert ClusterAccount.objects.get(account__user=jane).state == State.LOCKED
    (problem,) = result.problems
    assert problem.startswith("live terminals could not be told to close: the channel layer is unreachable")
    told = AuditEvent.objects.get(action="offboard.terminals")
    assert (told.outcome, told.message) == ("error", problem)
    assert AuditEvent.objects.get(action="offboard.finished").reason == "incomplete"


def test_the_idp_refusing_someone_offboards_them(jane, cluster, fake):
    offboarding.on_idp_refusal(jane, "account disabled")
    jane.refresh_from_db()
    assert not jane.is_active
    assert jane.deactivated_reason == "The identity provider refused sign-in: account disabled"
    assert AuditEvent.objects.get(action="offboard.deactivated").actor_name == "identity provider"


# --- the triggers: admin action, unticking "active", the command ---------------------------------


def test_the_admin_action_offboards_the_selected_people_but_not_yourself(
    admin_client, admin_user, jane, fake
):
    response = admin_client.post(
        "/admin/accounts/user/",
        {"action": "offboard_selected", "_selected_action": [jane.pk, admin_user.pk], "post": "yes"},
        follow=True,
    )
    assert "You cannot offboard yourself." in response.content.decode()
    jane.refresh_from_db()
    admin_user.refresh_from_db()
    assert not jane.is_active
    assert admin_user.is_active
    assert jane.deactivated_reason == "Deactivated in the admin by admin"


def test_the_admin_asks_before_offboarding_and_says_what_will_happen(
    admin_client, admin_user, jane, cluster, fake
):
    provisioning.ensure_ready(jane, cluster)  # c1 leaves jobs to finish
    other = Cluster.objects.create(
        slug="c2",
        name="Cluster Two",
        slurmrestd_url="http://127.0.0.1:9",
        api_version="v0.0.38",
        jwt_key_ref=cluster.jwt_key_ref,
        offboard_jobs="cancel",
        has_accounting=False,
    )
    provisioning.ensure_ready(jane, other)
    for _ in range(2):
        api_tokens.issue(jane)
    revoked, _ = api_tokens.issue(jane)
    api_tokens.revoke(revoked, reason="old")
    posix_name = jane.posix_account.username
    for job_id, state in ((1, "RUNNING"), (2, "PENDING"), (3, "COMPLETED")):
        JobRecord.objects.create(
            cluster=other, person=jane, posix_user=posix_name, slurm_job_id=job_id, state=state
        )
    JobRecord.objects.create(
        cluster=cluster, person=jane, posix_user=posix_name, slurm_job_id=9, state="RUNNING"
    )
    session = {"person": jane, "person_name": "jane", "posix_user": posix_name, "transport": "local"}
    TerminalSession.objects.create(cluster=other, cluster_slug="c2", **session)
    TerminalSession.objects.create(cluster=other, cluster_slug="c2", ended=timezone.now(), **session)

    calls_before = len(fake.calls)
    asked = admin_client.post(
        "/admin/accounts/user/", {"action": "offboard_selected", "_selected_action": [jane.pk, admin_user.pk]}
    )
    assert asked.status_code == 200
    page = asked.content.decode()
    assert "Offboard 1 person?" in page
    assert "You cannot offboard yourself: you are left out." in page
    listed = page.split('<ul class="consequences">')[1].split("</ul>")[0]
    said = [html.unescape(line) for line in re.findall(r"<li>(.*?)</li>", listed)]
    uid = jane.posix_account.uid
    assert said == [
        "Deactivated now: no sign-in, API call or new Slurm token works for them any more.",
        "2 API tokens revoked.",
        "1 live terminal closed.",
        f"{posix_name} takes no new Slurm job on Cluster One (MaxSubmitJobs=0).",
        f"{posix_name} locked on Cluster One (usermod -L).",
        "1 queued or running job on Cluster One left to finish (the cluster's setting).",
        f"Every process of {posix_name} (UID {uid}) on Cluster One's head node killed.",
        f"{posix_name} locked on Cluster Two (usermod -L).",
        "2 queued or running jobs on Cluster Two cancelled.",
        f"Every process of {posix_name} (UID {uid}) on Cluster Two's head node killed.",
    ]
    assert 'name="post" value="yes"' in page
    # Asking did nothing: still active, tokens still good, nothing run on a head node, nothing audited.
    jane.refresh_from_db()
    assert jane.is_active
    assert jane.api_tokens.filter(revoked__isnull=True).count() == 2
    assert len(fake.calls) == calls_before
    assert not AuditEvent.objects.filter(action__startswith="offboard.").exists()


def test_unticking_active_in_the_admin_is_a_full_offboarding(admin_client, jane, fake):
    _, raw = api_tokens.issue(jane)
    response = admin_client.post(
        f"/admin/accounts/user/{jane.pk}/change/",
        {"username": "jane", "email": jane.email, "first_name": "", "last_name": ""},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    jane.refresh_from_db()
    assert not jane.is_active
    assert jane.deactivated_at is not None
    assert api_tokens.authenticate(raw) is None


def test_the_command_offboards_by_email(jane, fake):
    out = StringIO()
    call_command("offboard", "Jane@corp.example", "--reason", "contract ended", stdout=out)
    jane.refresh_from_db()
    assert not jane.is_active
    assert jane.deactivated_reason == "contract ended"
    assert "done: deactivated" in out.getvalue()


def test_the_command_fails_loudly_when_clean_up_is_incomplete(jane, cluster, fake):
    provisioning.ensure_ready(jane, cluster)
    fake.down = True
    out = StringIO()
    with pytest.raises(CommandError, match="reconcile_accounts"):
        call_command("offboard", "jane@corp.example", "--reason", "left", stdout=out)
    assert "NOT done" in out.getvalue()


def test_the_command_needs_a_reason(jane):
    with pytest.raises(CommandError, match="reason"):
        call_command("offboard", "jane@corp.example")


# --- for real: a Linux user on this machine, Slurm, the channel layer -----------------------------
# `real_person` comes from tests/accounts/conftest.py.


def shadow_entry(name: str) -> list[str]:
    return subprocess.run(
        ["getent", "shadow", name], capture_output=True, text=True, check=True
    ).stdout.split(":")


# The tests below run on each Slurm release (tests/conftest.py, every_release); root's scontrol, squeue and
# sacctmgr are that release's (tests/support/slurm_commands.py).


def job_state(job_id: int) -> str:
    shown = subprocess.run(
        [slurm_commands.command("scontrol"), "-o", "show", "job", str(job_id)], capture_output=True, text=True
    ).stdout
    fields = dict(f.split("=", 1) for f in shown.split() if "=" in f)
    return fields.get("JobState", "")


@pytest.mark.root
@pytest.mark.slurm
@pytest.mark.every_release
def test_offboarding_a_real_person_locks_them_out_everywhere(real_person, demo_cluster, monkeypatch):
    Cluster.objects.filter(pk=demo_cluster.pk).update(offboard_jobs="cancel")
    name = posix.ensure_account(real_person).username
    client = slurm_for(real_person, demo_cluster)
    home = f"/home/{name}"
    job_id = client.submit(
        JobSpec(script="#!/bin/sh\nsleep 300\n", working_directory=home, name="ct-offboard", time_limit=5)
    ).job_id
    _, raw = api_tokens.issue(real_person)
    assert shadow_entry(name)[7] == ""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(offboarding.person_group(real_person.pk), channel)

    result = offboarding.offboard(real_person, by="test", reason="left the company")

    assert result.ok, result.problems
    with pytest.raises(SlurmAccessRefused):
        slurm_for(real_person, demo_cluster)
    assert api_tokens.authenticate(raw) is None
    assert receive(layer, channel) == {"type": "offboard.close", "reason": "left the company"}
    status = subprocess.run(["passwd", "-S", name], capture_output=True, text=True, check=True).stdout.split()
    assert status[:2] == [name, "L"]
    shadow = shadow_entry(name)
    assert shadow[1].startswith("!")
    # Expired on 2 January 1970: no login by any means that checks the account, password or not.
    assert shadow[7] == "1"
    assert ClusterAccount.objects.get(account__user=real_person).state == State.LOCKED
    deadline = time.monotonic() + 15
    while job_state(job_id) != "CANCELLED" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job_state(job_id) == "CANCELLED"


@pytest.mark.root
@pytest.mark.slurm
@pytest.mark.every_release
def test_offboarding_leaves_nothing_of_theirs_running_and_nothing_they_hold_working(
    real_person, demo_cluster
):
    name = posix.ensure_account(real_person).username
    uid = posix.ensure_account(real_person).uid
    slurm_for(real_person, demo_cluster)  # their account, made just in time
    # What someone about to leave might set up from their shell: processes that outlive the shell,
    # and a token of their own (refused: only the console mints tokens).
    for line in ("setsid -f sleep 4000", "nohup sleep 4001 >/dev/null 2>&1 &"):
        subprocess.run(["runuser", "-l", name, "-c", line], check=True, timeout=30)
    scontrol = slurm_commands.command("scontrol")
    minted = subprocess.run(
        ["runuser", "-l", name, "-c", f"{scontrol} token lifespan=31536000"], capture_output=True, text=True
    )
    assert minted.returncode != 0
    assert "SLURM_JWT" not in minted.stdout
    # A token the console minted for them a moment before (as for a job list), still valid for minutes.
    earlier = demo_cluster.slurm(name)
    spec = JobSpec(script="#!/bin/sh\nsleep 300\n", working_directory=f"/home/{name}", time_limit=5)
    queued = earlier.submit(spec).job_id
    assert subprocess.run(["pgrep", "-U", str(uid)], capture_output=True).returncode == 0

    started = time.monotonic()
    result = offboarding.offboard(real_person, by="test", reason="left the company")
    took = time.monotonic() - started

    assert result.ok, result.problems
    assert subprocess.run(["pgrep", "-U", str(uid), "-r", offboarding.LIVE_STATES]).returncode == 1
    deadline = time.monotonic() + 15
    while job_state(queued) != "CANCELLED" and time.monotonic() < deadline:
        time.sleep(0.2)  # COMPLETING while slurmd cleans up
    assert job_state(queued) == "CANCELLED"
    with pytest.raises(SlurmError):
        earlier.submit(spec)
    assert not [line for line in squeue_of(name) if line.strip()]
    blocked = subprocess.run(
        [slurm_commands.command("sacctmgr"), "-n", "-P", "show", "assoc", f"user={name}", "format=maxsubmit"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert blocked
    assert set(blocked) == {"0"}
    assert took <= 5
    print(
        f"offboarded in {took:.2f} s: 0 processes of UID {uid} left, 1 job cancelled, "
        "a token minted before queues nothing, the association takes no job"
    )


def squeue_of(name: str) -> list[str]:
    return subprocess.run(
        [slurm_commands.command("squeue"), "-h", "-u", name], capture_output=True, text=True
    ).stdout.splitlines()
