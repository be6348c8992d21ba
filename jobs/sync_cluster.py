"""One round's work on one cluster: its people's queues into JobRecords, the ledger settled as jobs end,
its policy on the head node. jobs.sync runs it for every cluster at once, and the loop.

Decisions:

- **Per person.** With `PrivateData=jobs` a token sees only its own user's jobs, so the
  loop asks slurmrestd once per person with a ready account on the cluster, with
  `update_time` so that an unchanged queue costs a 304 and no parsing.
- **Outside jobs.** A job of that person the console does not know (sbatch in a
  terminal) becomes a JobRecord with origin "outside"; its use goes to
  `ledger.record_outside_use` when it ends. A person with a console submit in flight
  (a claim row without a job id) is not searched for outside jobs in that round: the
  job Slurm already lists may be the one the claim is about to receive. Such a person's
  queue is always read in full (no `update_time`), so a job queued while its claim was
  in flight cannot hide behind an "unchanged" answer.
- **Unconfirmed submits** are confirmed by their tag or given up (jobs.claims), against
  the person's full queue.
- **Each ledger call exactly once**: see jobs.tracking, which applies each listed job to its record.
- **Job arrays.** Slurm lists an array as its record of tasks not started yet plus one job per task
  that started; they are applied together to the array's one record and its tasks' records
  (jobs.tracking.apply_array), whether the console submitted the array or it came from a shell.
- **Forgotten jobs.** slurmctld forgets a job `MinJobAge` after it ends; a record still
  active that its owner's queue no longer lists is looked up once with `sacct` as
  that user on the head node.
- **What the policy no longer allows.** Where Slurm enforces the policy, a queued or running
  job that the person's grants no longer allow (withdrawn while it waited, or let in some
  other way) is cancelled, with the sentence on its job page and in the audit log.
- **The policy on the head nodes.** After its queues, every cluster whose Slurm enforces
  the policy gets its snapshot republished when the settled use changed (access.snapshot),
  with "settled through" the round's start when every queue there was read, the plugin's
  refusals since the last round go to the audit log, and Slurm's own association limits
  follow the grants and quotas (access.limits, the second lock).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime, timedelta
from typing import Protocol

from django.db.models import Q
from django.utils import timezone

from access import limits, policy, snapshot, suspensions
from accounts.models import ClusterAccount
from accounts.slurm_access import SlurmAccessRefused, slurm_for
from audit.log import record as audit
from clusters import tokens
from clusters.models import Cluster
from clusters.slurm import Job, SlurmError, SlurmNotFound
from jobs import claims
from jobs.models import JobRecord
from jobs.tracking import Report, apply, apply_array, array_from_sacct, from_sacct, has_run

log = logging.getLogger("clusterra.jobs.sync")

# How far back update_time looks, so a change in the same second as the last poll is not missed.
UPDATE_TIME_MARGIN = 2

# update_time per (cluster pk, POSIX user), kept for the life of the loop's process.
_last_poll: dict[tuple[int, str], int] = {}


# --- one person ---------------------------------------------------------------------------------


def sync_account(row: ClusterAccount, report: Report) -> None:
    """Poll one person's queue on one cluster and apply it."""
    cluster, person, name = row.cluster, row.account.user, row.account.username
    if person is None or not person.is_active:
        return
    key = (cluster.pk, name)
    asked = int(time.time()) - UPDATE_TIME_MARGIN
    claimed = JobRecord.objects.filter(cluster=cluster, person=person, slurm_job_id__isnull=True).exists()
    try:
        client = slurm_for(person, cluster, provision=False)
        listing = client.jobs(update_time=None if claimed else _last_poll.get(key))
    except (SlurmError, SlurmAccessRefused, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        report.errors.append(f"{cluster.slug}/{name}: {e}")
        log.warning("sync: %s on %s: %s", name, cluster.slug, e)
        return
    report.people += 1
    if listing.not_modified:
        # Nothing changed since the last full listing, which already accounted for every record.
        report.unchanged += 1
        _last_poll[key] = listing.last_update or asked
        return
    mine = [j for j in listing.jobs if not j.user_name or j.user_name == name]
    if claimed:
        claims.resolve(cluster, person, mine, report)
    # A job older than the account is not theirs to be charged for: it ran before the console
    # knew them (a Linux user made by hand), or under an earlier holder of the UID.
    since = row.user_created_at
    # Order matters (see the module's decisions): the claim check comes after the listing.
    in_flight = JobRecord.objects.filter(cluster=cluster, person=person, slurm_job_id__isnull=True).exists()
    plain = [j for j in mine if j.array_job_id is None]
    arrays: dict[int, list[Job]] = {}
    for job in mine:
        if job.array_job_id is not None:
            arrays.setdefault(job.array_job_id, []).append(job)
    ids = {j.job_id for j in plain} | set(arrays)
    known = {
        r.slurm_job_id: r
        for r in JobRecord.objects.filter(
            cluster=cluster, posix_user=name, slurm_job_id__in=ids, array_parent__isnull=True
        ).order_by("created")
    }
    for job in plain:
        try:
            record = known.get(job.job_id)
            if record is None:
                committing = claims.may_be_committing(job)  # its submit's transaction may still be open
                if in_flight or committing or (job.is_finished and not has_run(job)) or _before(job, since):
                    # In flight: see above. A job that ended without running cost nothing.
                    continue
                record = _adopt(cluster, person, name, job)
                report.created += 1
            apply(record, job, report)
        except Exception as e:  # one bad job must not stop the others
            log.exception("sync: job %s of %s on %s", job.job_id, name, cluster.slug)
            report.errors.append(f"{cluster.slug}/{name}/job {job.job_id}: {type(e).__name__}: {e}")
    for array_id, members in arrays.items():
        try:
            record = known.get(array_id)
            if record is None:
                first = min(members, key=lambda j: (j.array_task_id is not None, j.job_id))
                ran = any(has_run(j) or not j.is_finished for j in members)
                if in_flight or claims.may_be_committing(first) or not ran or _before(first, since):
                    continue
                record = _adopt(cluster, person, name, first, job_id=array_id)
                report.created += 1
            apply_array(record, members, report)
        except Exception as e:
            log.exception("sync: array %s of %s on %s", array_id, name, cluster.slug)
            report.errors.append(f"{cluster.slug}/{name}/array {array_id}: {type(e).__name__}: {e}")
    # slurmctld's own clock when it says (v0.0.40+), so a clock difference cannot hide a change.
    _last_poll[key] = listing.last_update or asked
    if cluster.enforce_policy:
        _cancel_withdrawn(cluster, person, client, mine, report)
    _forgotten(cluster, name, ids, arrays, report, client)


def _cancel_withdrawn(cluster: Cluster, person, client, mine: list[Job], report: Report) -> None:
    """Cancel the person's queued and running jobs that their grants no longer allow, and say why."""
    arrays_done: set[int] = set()
    for job in mine:
        if job.is_finished or job.array_job_id in arrays_done:
            continue
        if job.array_job_id is not None:
            # The array's id cancels every task of it at once.
            arrays_done.add(job.array_job_id)
            job = dataclasses.replace(job, job_id=job.array_job_id)
        # Slurm names every job's QOS (the default too), so only the account is held against the grant here.
        problem = policy.grant_problem(person, cluster, job.partition, account=job.account)
        if not problem:
            continue
        note = f"Cancelled by the console: {problem}"
        try:
            client.cancel(job.job_id)
        except SlurmNotFound:
            continue
        except SlurmError as e:
            report.errors.append(f"{cluster.slug}/{job.user_name}/job {job.job_id}: cancel: {e}")
            continue
        JobRecord.objects.filter(cluster=cluster, slurm_job_id=job.job_id).update(
            policy_note=note[:2000], updated=timezone.now()
        )
        audit(
            "job.cancelled_by_policy",
            actor=person,
            cluster=cluster,
            target=f"job {job.job_id}",
            outcome="denied",
            reason="grant_withdrawn",
            message=f"Job {job.job_id} ({job.name or 'no name'}) on {job.partition} was cancelled: {problem}",
            details={"job_id": job.job_id, "partition": job.partition, "state": job.state},
        )
        report.cancelled += 1


def _before(job: Job, since: datetime | None) -> bool:
    # Slurm keeps whole seconds: a job from the account's first second still counts as after it.
    if since is None or job.submit_time is None:
        return False
    return job.submit_time < since - timedelta(seconds=1)


def _adopt(cluster: Cluster, person, name: str, job: Job, *, job_id: int | None = None) -> JobRecord:
    """A JobRecord for a job submitted outside the console (sbatch in a terminal, a cron job).

    `job_id` is the array's id when `job` is one of an array's records: the array is what is adopted.
    """
    job_id = job_id or job.job_id
    record = JobRecord.objects.create(
        cluster=cluster,
        person=person,
        posix_user=name,
        slurm_job_id=job_id,
        origin=JobRecord.Origin.OUTSIDE,
        ledger=JobRecord.Ledger.NONE,
    )
    what = "Job array" if job.array_job_id is not None else "Job"
    audit(
        "job.seen_outside",
        actor=person,
        cluster=cluster,
        target=f"job {job_id}",
        message=f"{what} {job_id} ({job.name or 'no name'}) of {name} was submitted outside the console.",
        details={"job_id": job_id, "partition": job.partition, "state": job.state},
    )
    return record


def _forgotten(
    cluster: Cluster, name: str, listed: set[int], arrays: dict[int, list[Job]], report: Report, client
) -> None:
    """Active records whose job the queue no longer lists: ask for the job once, then sacct.

    An array's task is asked for by its own id; an array no longer listed at all is read from sacct
    whole. Arrays whose tasks changed here are summed up again.
    """
    tasks_listed = {j.job_id for members in arrays.values() for j in members}
    stale = JobRecord.objects.active().filter(cluster=cluster, posix_user=name).select_related("array_parent")
    touched: dict[int, JobRecord] = {}
    for record in stale.filter(array_parent__isnull=False).exclude(slurm_job_id__in=tasks_listed):
        try:
            try:
                job = client.job(record.slurm_job_id)
            except SlurmNotFound:
                job = from_sacct(cluster, name, record.slurm_job_id, array_task=True)
            if job is None:
                continue
            apply(record, job, report)
            touched[record.array_parent_id] = record.array_parent
        except Exception as e:
            log.exception("sync: task %s of %s on %s", record.job_id_text, name, cluster.slug)
            report.errors.append(f"{cluster.slug}/{name}/job {record.job_id_text}: {e}")
    arrays_only = ~Q(array="") | ~Q(array_summary={})
    for parent in stale.filter(arrays_only, array_parent__isnull=True).exclude(slurm_job_id__in=listed):
        jobs = array_from_sacct(cluster, name, parent.slurm_job_id)
        if jobs:  # none yet (slurmdbd may lag): ask again next round
            touched[parent.pk] = parent
            arrays[parent.slurm_job_id] = jobs
    for parent in touched.values():
        try:
            apply_array(parent, arrays.get(parent.slurm_job_id, []), report)
        except Exception as e:
            log.exception("sync: array %s of %s on %s", parent.slurm_job_id, name, cluster.slug)
            report.errors.append(f"{cluster.slug}/{name}/array {parent.slurm_job_id}: {e}")
    stale = stale.filter(array_parent__isnull=True).exclude(arrays_only).exclude(slurm_job_id__in=listed)
    for record in stale:
        try:
            job = client.job(record.slurm_job_id)
        except SlurmNotFound:
            job = from_sacct(cluster, name, record.slurm_job_id)
        except SlurmError as e:
            report.errors.append(f"{cluster.slug}/{name}/job {record.slurm_job_id}: {e}")
            continue
        if job is None:
            continue
        try:
            apply(record, job, report)
        except Exception as e:
            log.exception("sync: job %s of %s on %s", record.slurm_job_id, name, cluster.slug)
            report.errors.append(f"{cluster.slug}/{name}/job {record.slurm_job_id}: {e}")


# --- one cluster -------------------------------------------------------------------------------


class Progress(Protocol):
    """Where a cluster's round is, said as it goes (jobs.sync's task for that cluster)."""

    doing: str


def sync_cluster(cluster: Cluster, report: Report, started: datetime, task: Progress | None = None) -> None:
    """Everything of one round that talks to one cluster.

    Its people's queues (with their claims, forgotten jobs and what the policy no longer allows), then,
    where its Slurm enforces the policy, its snapshot, the plugin's refusals, the association limits
    and the accounts without a grant. A disabled cluster still gets its policy: the snapshot is what
    tells its plugin that the console closed it.
    """
    if cluster.enabled:
        rows = (
            ClusterAccount.objects.filter(
                cluster=cluster, state=ClusterAccount.State.READY, account__user__is_active=True
            )
            .select_related("account__user", "cluster")
            .order_by("account__username")
        )
        for row in rows:
            if task is not None:
                task.doing = f"reading {row.account.username}'s queue"
            sync_account(row, report)
    if not cluster.enforce_policy:
        return
    if task is not None:
        task.doing = "publishing the policy"
    # "Settled through" the round's start only when every queue there was read (no error so far).
    enforce_policy(cluster, report, settled_through=None if report.errors else started)
    if cluster.enabled:
        # Where the console's policy is the cluster's (its Slurm plugin enforces it), no grant, no account.
        if task is not None:
            task.doing = "locking accounts without a grant"
        locked, errors = suspensions.suspend_ungranted(cluster)
        report.suspended += locked
        report.errors += errors


def enforce_policy(cluster: Cluster, report: Report, *, settled_through: datetime | None) -> None:
    """Republish the cluster's policy where Slurm enforces it, audit what its plugin refused, set limits."""
    try:
        snapshot.publish(cluster, settled_through=settled_through)
        report.refused += snapshot.collect_refusals(cluster)
        changed, errors = limits.reconcile_cluster(cluster)
        report.limited += changed
        report.errors += errors
    except Exception as e:  # one cluster's head node must not stop the loop
        log.exception("sync: policy of %s", cluster.slug)
        report.errors.append(f"{cluster.slug}/policy: {type(e).__name__}: {e}")
