"""Offboarding: a person loses every way in at once: sign-in, API and Slurm tokens, terminals, Linux users.

Order matters: the database change comes first because it alone stops new sign-ins,
new API calls (api_tokens refuses inactive people) and new Slurm tokens (slurm_for
refuses them). Sessions need no sweep: Django's auth backends refuse an inactive
user on the next request. Everything after that is clean-up that may partly fail
(a head node down); each step is audited, the result lists what did not work, and
`manage.py reconcile_accounts` locks what is still unlocked later. Calling
`offboard` again is safe and finishes what was left.

Jobs: a cluster's `offboard_jobs` ("cancel" by default, or "leave") decides whether
queued and running jobs are cancelled or left to finish. Cancelling is done with a
token minted directly for the person's POSIX name through `cluster.slurm()`: the
only place above `clusters` that bypasses accounts.slurm_access, because that gate
(rightly) refuses a deactivated person, and with PrivateData=jobs only the owner's
token sees and may cancel those jobs without a SlurmUser token, which the console
never mints.

From async code (a consumer), call `offboard` through `sync_to_async`: it sends
the close message with `async_to_sync`, which cannot run inside an event loop.

`foresee` says what `offboard` would do, before anyone confirms it (the admin asks first). What it
cannot know from here (live terminals, queued jobs: apps above this one) the `foreseen` signal asks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from accounts import api_tokens
from accounts.models import ClusterAccount, User
from accounts.provisioning import ProvisioningError, slurm_cluster_name
from audit.log import record
from clusters import headnode, tokens
from clusters.slurm import SlurmError

State = ClusterAccount.State
CLOSE_MESSAGE_TYPE = "offboard.close"
# What a person's live terminals on one cluster hear when their terminal grant there is gone
# (a grant withdrawn, a group left): {"type", "cluster": slug, "reason": the policy's sentence}.
WITHDRAWN_MESSAGE_TYPE = "access.withdrawn"
LOCK_TIMEOUT = 60.0
# Seconds the close notice to live terminals may take to reach the channel layer.
NOTICE_TIMEOUT = 5.0
JOB_POLICIES = ("leave", "cancel")
# Rounds of pkill then pgrep before processes still there are reported as a problem.
PROCESS_ROUNDS = 10
# Every state `pgrep -r` knows but Z and X: a process that still runs, sleeps or is stopped.
LIVE_STATES = "D,R,S,T,t,W,P,I"


# Sent by `foresee(user)` with `user=`; a receiver answers with counts of what offboarding will end
# that its app keeps: {"live_terminals": 2} or {"unfinished_jobs": {cluster_pk: 3}}.
foreseen = Signal()


def person_group(user_pk: int) -> str:
    """The channel-layer group every live terminal of one person joins."""
    return f"person-{user_pk}"


@dataclass
class OffboardResult:
    user: User
    done: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def offboard(user: User, *, by: Any = None, reason: str = "") -> OffboardResult:
    """Take all of `user`'s access away now. `by` is the person (or a word like "idp") doing it."""
    reason = (reason or "").strip() or "Offboarded"
    result = OffboardResult(user)

    _deactivate(user, by, reason, result)
    revoked = api_tokens.revoke_all(user, by=by, reason="offboarded")
    result.done.append(f"{revoked} API token(s) revoked")
    _close_terminals(user, by, reason, result)
    rows = ClusterAccount.objects.filter(account__user=user).select_related("account", "cluster")
    for row in rows:
        _lock_and_jobs(row, by, result)

    record(
        "offboard.finished",
        actor=by,
        target=user.get_username(),
        outcome="allowed" if result.ok else "error",
        reason="complete" if result.ok else "incomplete",
        message="; ".join(result.done + result.problems),
    )
    return result


def foresee(user: User) -> list[str]:
    """What `offboard(user)` would do now, step by step as it does it, in words; changes nothing.

    Counts come from the console's own records (the jobs as the sync loop last saw them); offboarding
    itself asks each cluster again when it runs.
    """
    known: dict[str, Any] = {"live_terminals": 0, "unfinished_jobs": {}}
    for _, answer in foreseen.send(sender=User, user=user):
        for key, value in (answer or {}).items():
            if isinstance(value, dict):
                known.setdefault(key, {}).update(value)
            else:
                known[key] = known.get(key, 0) + value
    if user.is_active or user.deactivated_at is None:
        lines = ["Deactivated now: no sign-in, API call or new Slurm token works for them any more."]
    else:
        lines = [
            f"Already deactivated ({user.deactivated_reason}); offboarding again finishes what was left."
        ]
    tokens_live = user.api_tokens.filter(revoked__isnull=True).count()
    lines.append(f"{tokens_live} API token{'' if tokens_live == 1 else 's'} revoked.")
    terminals = known["live_terminals"]
    lines.append(f"{terminals} live terminal{'' if terminals == 1 else 's'} closed.")
    rows = ClusterAccount.objects.filter(account__user=user).select_related("account", "cluster")
    for row in rows.order_by("cluster__name"):
        lines += _foresee_on(row, known["unfinished_jobs"].get(row.cluster_id, 0))
    return lines


def _foresee_on(row: ClusterAccount, unfinished: int) -> list[str]:
    """What `_lock_and_jobs` would do on one cluster."""
    name, cluster = row.account.username, row.cluster
    lines = []
    if row.user_created_at is not None and cluster.has_accounting:
        lines.append(f"{name} takes no new Slurm job on {cluster.name} (MaxSubmitJobs=0).")
    if row.state != State.LOCKED:
        lines.append(f"{name} locked on {cluster.name} (usermod -L).")
    if row.user_created_at is None:
        return lines
    jobs = f"{unfinished} queued or running job{'' if unfinished == 1 else 's'}"
    if cluster.offboard_jobs == "leave":
        lines.append(f"{jobs} on {cluster.name} left to finish (the cluster's setting).")
    else:
        lines.append(f"{jobs} on {cluster.name} cancelled.")
    lines.append(f"Every process of {name} (UID {row.account.uid}) on {cluster.name}'s head node killed.")
    return lines


def on_idp_refusal(user: User, detail: str = "") -> OffboardResult:
    """Called by the OIDC adapter when the IdP says this person may no longer sign in."""
    reason = "The identity provider refused sign-in" + (f": {detail}" if detail else "")
    return offboard(user, by="identity provider", reason=reason[:200])


def suspend_on_cluster(row: ClusterAccount, *, by: Any = None) -> str:
    """Lock the account of an active person who has no grant on that cluster any more (SUSPENDED).

    Unlike an offboarding it is undone by itself: provisioning unlocks it when a grant is back.
    """
    return lock_on_cluster(row, by=by, state=State.SUSPENDED)


def lock_on_cluster(row: ClusterAccount, *, by: Any = None, state: str = State.LOCKED) -> str:
    """Lock one POSIX account on its cluster (`usermod -L -e 1`); returns what happened.

    Raises HeadNodeError when the head node cannot be reached, and RuntimeError
    when usermod itself fails; the row is LOCKED (or `state`) only once that worked.
    """
    name, cluster = row.account.username, row.cluster
    result = headnode.run(cluster, ["usermod", "-L", "-e", "1", name], timeout=LOCK_TIMEOUT)
    if result.exit_code == 6:
        # usermod: no such user. Provisioning never got that far; the row still stops it from trying.
        outcome = f"{name} never existed on {cluster.slug}; marked locked"
    elif result.ok:
        outcome = f"{name} locked on {cluster.slug}"
    else:
        raise RuntimeError(
            f"usermod could not lock {name} on {cluster.slug}: {result.output() or result.exit_code}"
        )
    with transaction.atomic():
        row.state = state
        row.busy_until = None
        row.save(update_fields=["state", "busy_until", "updated"])
    action = "offboard.locked" if state == State.LOCKED else "access.suspended"
    record(action, actor=by, cluster=cluster, target=name, message=outcome + ".")
    return outcome


def _deactivate(user: User, by: Any, reason: str, result: OffboardResult) -> None:
    first_time = user.is_active or user.deactivated_at is None
    if first_time:
        user.is_active = False
        user.deactivated_at = user.deactivated_at or timezone.now()
        user.deactivated_reason = reason[:200]
        user.save(update_fields=["is_active", "deactivated_at", "deactivated_reason"])
    record(
        "offboard.deactivated",
        actor=by,
        target=user.get_username(),
        reason="first" if first_time else "again",
        message=reason
        if first_time
        else f"Already deactivated ({user.deactivated_reason}); finishing clean-up.",
    )
    result.done.append("deactivated" if first_time else "was already deactivated")


def _close_terminals(user: User, by: Any, reason: str, result: OffboardResult) -> None:
    layer = get_channel_layer()
    group = person_group(user.pk)
    try:
        if layer is None:
            raise RuntimeError("no channel layer is configured")
        async_to_sync(_tell)(layer, group, {"type": CLOSE_MESSAGE_TYPE, "reason": reason})
    except Exception as e:
        # The layer (Redis) being down must not stop the locking below. The person is already inactive,
        # and a terminal that lost the layer checks that in the database, so it still closes, only later.
        problem = f"no answer within {NOTICE_TIMEOUT:g} s" if isinstance(e, TimeoutError) else str(e)
        message = (
            f"live terminals could not be told to close: the channel layer is unreachable "
            f"({type(e).__name__}: {problem}); terminals that lost it too close once they see the "
            "person deactivated"
        )
        result.problems.append(message)
        record("offboard.terminals", actor=by, target=user.get_username(), outcome="error", message=message)
        return
    result.done.append("live terminals told to close")
    record("offboard.terminals", actor=by, target=user.get_username(), message=f"Close sent to {group}.")


async def _tell(layer: Any, group: str, message: dict[str, Any]) -> None:
    # Bounded: a Redis that drops packets would otherwise hold the whole offboarding for minutes.
    async with asyncio.timeout(NOTICE_TIMEOUT):
        await layer.group_send(group, message)


def _lock_and_jobs(row: ClusterAccount, by: Any, result: OffboardResult) -> None:
    # Slurm first: a token minted before now (by the console, or by the person while token creation was
    # open) still authenticates until it expires, so the association must take no new job before anything
    # else; then the jobs, the account, and last whatever still runs as them.
    if row.user_created_at is not None and row.cluster.has_accounting:
        _block_in_slurm(row, by, result)
    if row.state != State.LOCKED:
        try:
            result.done.append(lock_on_cluster(row, by=by))
        except (headnode.HeadNodeError, RuntimeError) as e:
            message = f"{row.account.username} not locked on {row.cluster.slug}: {e}"
            result.problems.append(message)
            record(
                "offboard.locked",
                actor=by,
                cluster=row.cluster,
                target=row.account.username,
                outcome="error",
                message=message,
            )
    if row.user_created_at is not None:
        _handle_jobs(row, by, result)
        _end_processes(row, by, result)


def _block_in_slurm(row: ClusterAccount, by: Any, result: OffboardResult) -> None:
    """MaxSubmitJobs=0 on every association of theirs on that Slurm cluster: no token queues anything."""
    name, cluster = row.account.username, row.cluster
    try:
        slurm_cluster = slurm_cluster_name(cluster)
        where = ["where", f"name={name}", f"cluster={slurm_cluster}"]
        done = headnode.run(
            cluster,
            ["sacctmgr", "-i", "modify", "user", *where, "set", "MaxSubmitJobs=0"],
            timeout=LOCK_TIMEOUT,
        )
        # "Nothing modified": already blocked (a second offboard), or no association at all.
        if not done.ok and "Nothing modified" not in done.output():
            raise RuntimeError(f"sacctmgr: {done.output() or done.exit_code}")
    except (headnode.HeadNodeError, ProvisioningError, RuntimeError) as e:
        message = f"{name}'s Slurm association on {cluster.slug} not blocked: {e}"
        result.problems.append(message)
        record("offboard.slurm", actor=by, cluster=cluster, target=name, outcome="error", message=message)
        return
    outcome = f"{name} takes no new Slurm job on {cluster.slug} (MaxSubmitJobs=0)"
    result.done.append(outcome)
    record("offboard.slurm", actor=by, cluster=cluster, target=name, message=outcome + ".")


def _end_processes(row: ClusterAccount, by: Any, result: OffboardResult) -> None:
    """Every process of their UID on the head node ended: a shell left behind with setsid, a nohup."""
    account, cluster = row.account, row.cluster
    uid = str(account.uid)
    problem = ""
    try:
        for _ in range(PROCESS_ROUNDS):
            headnode.run(cluster, ["pkill", "-KILL", "-U", uid], timeout=LOCK_TIMEOUT)
            # A process forked while pkill walked /proc is caught by the next round. Zombies (Z) are
            # ended already: they wait only for a parent (slurmstepd, or PID 1) to collect them.
            found = headnode.run(cluster, ["pgrep", "-U", uid, "-r", LIVE_STATES], timeout=LOCK_TIMEOUT)
            left = found.stdout.split() if found.ok else []
            problem = f"still running: {' '.join(left)}" if left else ""
            if not left:
                break
            time.sleep(0.2)
    except headnode.HeadNodeError as e:
        problem = f"not ended: {e}"
    if problem:
        message = f"processes of {account.username} on {cluster.slug} {problem}"
        result.problems.append(message)
        record(
            "offboard.processes",
            actor=by,
            cluster=cluster,
            target=account.username,
            outcome="error",
            message=message,
        )
        return
    outcome = f"no process of {account.username} (UID {uid}) left on {cluster.slug}"
    result.done.append(outcome)
    record("offboard.processes", actor=by, cluster=cluster, target=account.username, message=outcome + ".")


def _handle_jobs(row: ClusterAccount, by: Any, result: OffboardResult) -> None:
    cluster, account = row.cluster, row.account
    policy = cluster.offboard_jobs if cluster.offboard_jobs in JOB_POLICIES else "cancel"
    if policy == "leave":
        record(
            "offboard.jobs",
            actor=by,
            cluster=cluster,
            target=account.username,
            reason="leave",
            message="Queued and running jobs are left to finish (the cluster's setting).",
        )
        return
    cancelled, failures = [], []
    try:
        # The one deliberate bypass of slurm_access.slurm_for: see the module docstring.
        client = cluster.slurm(account.username, uid=account.uid, gid=account.gid)
        jobs = [j for j in client.jobs().jobs if j.user_name == account.username and not j.is_finished]
        for job in jobs:
            try:
                client.cancel(job.job_id)
                cancelled.append(job.job_id)
            except SlurmError as e:
                failures.append(f"job {job.job_id}: {e}")
    except (SlurmError, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        failures.append(str(e))
    message = f"Cancelled {len(cancelled)} job(s) of {account.username} on {cluster.slug}"
    if failures:
        message += "; could not cancel: " + "; ".join(failures)
        result.problems.append(message)
    else:
        result.done.append(message)
    record(
        "offboard.jobs",
        actor=by,
        cluster=cluster,
        target=account.username,
        outcome="error" if failures else "allowed",
        reason="cancel",
        message=message + ".",
        details={"cancelled": cancelled},
    )
