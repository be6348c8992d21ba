"""The sync loop: job states from slurmrestd into JobRecords, and the usage ledger settled as jobs end.

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
- **Unconfirmed submits.** A claim whose submit got no usable answer (jobs.submit) keeps
  its reservation. The job carrying the claim's tag in its Slurm comment becomes the
  claim's record (attached, then followed like any other); if the person's full queue
  still lists no such job once the confirmation window has passed, the reservation is
  released and the claim removed. The window only has to outlast a request still on its
  way through slurmrestd: a queued job stays listed until MinJobAge after it ends, and
  a round that cannot read the queue decides nothing. Claims left by a worker that died
  mid-submit are resolved the same way after STALE_CLAIM, and any claim still there
  after it (its owner's queue could not be read) is released by `release_stale_claims`.
- **Each ledger call exactly once.** The record's `ledger` field moves
  reserved → started → settled (or → released for a job that ended before it started)
  by a compare-and-set update in the same transaction as the ledger call, so the
  loop, a job page refreshing the same job, or a loop restarted mid-way cannot
  settle twice.
- **Forgotten jobs.** slurmctld forgets a job `MinJobAge` after it ends; a record still
  active that its owner's queue no longer lists is looked up once with `sacct` as
  that user on the head node.
- **What the policy no longer allows.** Where Slurm enforces the policy, a queued or running
  job that the person's grants no longer allow (withdrawn while it waited, or let in some
  other way) is cancelled, with the sentence on its job page and in the audit log.
- **The policy on the head nodes.** After each round, every cluster whose Slurm enforces
  the policy gets its snapshot republished when the settled use changed (access.snapshot),
  with "settled through" the round's start when every queue there was read, the plugin's
  refusals since the last round go to the audit log, and Slurm's own association limits
  follow the grants and quotas (access.limits, the second lock).
- **One instance.** `pg_try_advisory_lock` on PostgreSQL (held for the life of the
  loop's connection), a lock row with an expiry elsewhere (SQLite). A second loop
  waits as a standby; web workers never take the lock.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from access import ledger, limits, policy, snapshot, suspensions
from accounts import idp_check
from accounts.models import ClusterAccount
from accounts.slurm_access import SlurmAccessRefused, slurm_for
from audit.log import record as audit
from clusters import tokens
from clusters.models import Cluster
from clusters.slurm import FINISHED_JOB_STATES, Job, SlurmError, SlurmNotFound
from jobs import accounting, output
from jobs.models import JobRecord, SyncLock

log = logging.getLogger("clusterra.jobs.sync")

LOCK_NAME = "jobs.sync"
# An arbitrary constant that names this lock among the database's advisory locks.
ADVISORY_KEY = 0x636C7573_6A6F6273 & 0x7FFFFFFFFFFFFFFF
LOCK_ROW_SECONDS = 60
# A claim (submit in flight) older than this belongs to a worker that died mid-submit.
STALE_CLAIM = timedelta(minutes=10)
# How long an unconfirmed submit's job may take to show up in its owner's queue.
CONFIRM_WINDOW_SECONDS = 120
# How far back update_time looks, so a change in the same second as the last poll is not missed.
UPDATE_TIME_MARGIN = 2
Ledger = JobRecord.Ledger
RUNNING_STATES = frozenset({"RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING"})

# update_time per (cluster pk, POSIX user), kept for the life of the loop's process.
_last_poll: dict[tuple[int, str], int] = {}


@dataclass
class Report:
    people: int = 0
    unchanged: int = 0
    updated: int = 0
    created: int = 0
    started: int = 0
    settled: int = 0
    released: int = 0
    recorded: int = 0
    confirmed: int = 0
    refused: int = 0
    cancelled: int = 0
    limited: int = 0
    suspended: int = 0
    offboarded: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def eventful(self) -> bool:
        """Whether the round changed anything or met an error (a quiet round is not worth a log line)."""
        changes = (self.updated, self.created, self.started, self.settled, self.released, self.recorded)
        later = (self.confirmed, self.refused, self.cancelled, self.limited, self.suspended, self.offboarded)
        return any(changes) or any(later) or bool(self.errors)

    def summary(self) -> str:
        return (
            f"{self.people} people polled ({self.unchanged} unchanged), {self.updated} jobs updated, "
            f"{self.created} seen outside the console, {self.started} started, {self.settled} settled, "
            f"{self.released} released, {self.recorded} outside uses recorded, "
            f"{self.confirmed} unanswered submits confirmed, {self.refused} refused by Slurm's policy, "
            f"{self.cancelled} cancelled as no longer allowed, {self.limited} people's Slurm limits set, "
            f"{self.suspended} accounts locked for want of a grant, "
            f"{self.offboarded} people their IdP no longer accepts offboarded, "
            f"{len(self.errors)} errors"
        )


def confirm_window() -> timedelta:
    """How long an unconfirmed submit waits for its job to appear before its reservation is released."""
    seconds = getattr(settings, "CLUSTERRA_SUBMIT_CONFIRM_SECONDS", CONFIRM_WINDOW_SECONDS)
    return timedelta(seconds=float(seconds))


# --- applying what Slurm says to a record ------------------------------------------------------


def _started(job: Job) -> bool:
    """Whether the job ever ran: Slurm fills start_time even for one cancelled while pending."""
    if job.state in RUNNING_STATES:
        return True
    return (
        job.state in FINISHED_JOB_STATES and bool(job.nodes or job.batch_host) and job.start_time is not None
    )


def _fields_from(job: Job) -> dict[str, object]:
    started = _started(job)
    finished = job.state in FINISHED_JOB_STATES
    values: dict[str, object] = {
        "state": job.state,
        "reason": "" if job.state_reason == "None" else job.state_reason[:128],
        "name": job.name[:200],
        "partition": job.partition[:64],
        "account": job.account[:64],
        "qos": job.qos[:64],
        "submit_time": job.submit_time,
        # A pending job's start_time is Slurm's estimate, a running one's end_time its deadline.
        "start_time": job.start_time if started else None,
        "end_time": job.end_time if finished else None,
        "time_limit": job.time_limit,
        "node_list": job.nodes[:255],
        "exit_code": job.exit_code,
        "exit_signal": job.exit_signal,
    }
    if job.node_count:
        values["node_count"] = job.node_count
    if job.cpus:
        values["cpus"] = job.cpus
    if job.gpus or started:
        values["gpus"] = job.gpus
    if job.memory_mb:
        values["memory_mb"] = job.memory_mb
    if job.working_directory:
        values["working_directory"] = job.working_directory
    return values


def apply(record: JobRecord, job: Job, report: Report | None = None) -> bool:
    """Bring `record` in line with `job` and make the ledger calls that calls for; True if it changed."""
    report = report if report is not None else Report()
    values = _fields_from(job)
    changed = [name for name, value in values.items() if getattr(record, name) != value]
    for name in changed:
        setattr(record, name, values[name])
    if record.origin == JobRecord.Origin.OUTSIDE or not record.stdout_path:
        # Expanded once the record holds Slurm's working directory, name and nodes.
        paths = output.paths_for(record, job.standard_output, job.standard_error)
        for name, value in zip(("stdout_path", "stderr_path"), paths, strict=True):
            if getattr(record, name) != value:
                setattr(record, name, value)
                changed.append(name)
    now = timezone.now()
    record.last_seen = now
    if changed:
        record.save(update_fields=[*changed, "last_seen", "updated"])
        report.updated += 1
    else:
        # Seen but unchanged: no `updated` bump, so live lists do not redraw for nothing.
        JobRecord.objects.filter(pk=record.pk).update(last_seen=now)
    _settle(record, job, report)
    return bool(changed)


def _advance(record: JobRecord, expected: str, to: str, call) -> bool:
    """Move the ledger step from `expected` to `to` and make its call, both or neither."""
    with transaction.atomic():
        moved = JobRecord.objects.filter(pk=record.pk, ledger=expected).update(
            ledger=to, updated=timezone.now()
        )
        if not moved:
            record.refresh_from_db(fields=["ledger"])
            return False
        call()
    record.ledger = to
    return True


def _settle(record: JobRecord, job: Job, report: Report) -> None:
    started = _started(job)
    finished = job.state in FINISHED_JOB_STATES
    elapsed = _elapsed(job)
    cpus = job.cpus or record.cpus
    gpus = job.gpus if started else record.gpus
    earlier: list[tuple[int, int, int]] = []
    if (
        finished
        and started
        and job.restarts
        and record.ledger in (Ledger.RESERVED, Ledger.STARTED, Ledger.NONE)
    ):
        found = _earlier_runs(record, job, cpus)
        if found is None:
            return  # accounting has not listed every run yet: settle next round, all of them
        earlier = found
    if record.reservation_id is not None:
        rid = record.reservation_id
        if (
            started
            and record.ledger == Ledger.RESERVED
            and _advance(record, Ledger.RESERVED, Ledger.STARTED, lambda: ledger.started(rid))
        ):
            report.started += 1
        if finished and record.ledger in (Ledger.RESERVED, Ledger.STARTED):
            if started:
                if _advance(
                    record,
                    record.ledger,
                    Ledger.SETTLED,
                    lambda: ledger.settle(
                        rid, elapsed_seconds=elapsed, cpus=cpus, gpus=gpus, earlier_runs=earlier
                    ),
                ):
                    report.settled += 1
            elif _advance(
                record,
                record.ledger,
                Ledger.RELEASED,
                lambda: ledger.release(rid, f"job {job.job_id} ended ({job.state}) before it started"),
            ):
                report.released += 1
        return
    if record.origin == JobRecord.Origin.OUTSIDE and finished and record.ledger == Ledger.NONE and started:
        person = record.person
        if person is None:
            return
        if _advance(
            record,
            Ledger.NONE,
            Ledger.RECORDED,
            lambda: ledger.record_outside_use(
                person,
                record.cluster,
                job.job_id,
                elapsed_seconds=elapsed,
                cpus=cpus,
                gpus=gpus,
                ended=job.end_time or timezone.now(),
                earlier_runs=earlier,
            ),
        ):
            report.recorded += 1


# How long after a requeued job ended the loop waits for accounting to list all its runs.
RUNS_PATIENCE = timedelta(minutes=10)


def _earlier_runs(record: JobRecord, job: Job, cpus: int) -> list[tuple[int, int, int]] | None:
    """(elapsed, CPUs, GPUs) of each run of a requeued job before its last; None to ask again later.

    Slurm lists only the last run; accounting has them all. Until it lists as many earlier runs
    as Slurm says the job restarted (slurmdbd may lag), the job is not settled, for at most
    RUNS_PATIENCE: after that what accounting has is charged.
    """
    if not record.cluster.has_accounting:
        return []
    listed = accounting.runs(record.cluster, record.posix_user, job.job_id)
    patient = job.end_time is not None and timezone.now() - job.end_time < RUNS_PATIENCE
    if listed is None:
        return None if patient else []
    last_start = job.start_time
    earlier = [
        (r.elapsed_seconds, r.cpus or cpus, r.gpus)
        for r in listed
        if r.start_time is not None
        and r.end_time is not None
        and (last_start is None or r.end_time <= last_start)
    ]
    if len(earlier) < job.restarts and patient:
        return None
    return earlier


def _elapsed(job: Job) -> int:
    if job.start_time is None or not _started(job):
        return 0
    end = job.end_time if job.state in FINISHED_JOB_STATES and job.end_time else timezone.now()
    return max(0, int((end - job.start_time).total_seconds()))


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
        _resolve_claims(cluster, person, mine, report)
    # A job older than the account is not theirs to be charged for: it ran before the console
    # knew them (a Linux user made by hand), or under an earlier holder of the UID.
    since = row.user_created_at
    # Order matters (see the module's decisions): the claim check comes after the listing.
    in_flight = JobRecord.objects.filter(cluster=cluster, person=person, slurm_job_id__isnull=True).exists()
    ids = {j.job_id for j in mine}
    known = {
        r.slurm_job_id: r
        for r in JobRecord.objects.filter(cluster=cluster, posix_user=name, slurm_job_id__in=ids).order_by(
            "created"
        )
    }
    for job in mine:
        try:
            record = known.get(job.job_id)
            if record is None:
                if in_flight or (job.is_finished and not _started(job)) or _before(job, since):
                    # In flight: see above. A job that ended without running cost nothing.
                    continue
                record = _adopt(cluster, person, name, job)
                report.created += 1
            apply(record, job, report)
        except Exception as e:  # one bad job must not stop the others
            log.exception("sync: job %s of %s on %s", job.job_id, name, cluster.slug)
            report.errors.append(f"{cluster.slug}/{name}/job {job.job_id}: {type(e).__name__}: {e}")
    # slurmctld's own clock when it says (v0.0.40+), so a clock difference cannot hide a change.
    _last_poll[key] = listing.last_update or asked
    if cluster.enforce_policy:
        _cancel_withdrawn(cluster, person, client, mine, report)
    _forgotten(cluster, name, ids, report, client)


def _cancel_withdrawn(cluster: Cluster, person, client, mine: list[Job], report: Report) -> None:
    """Cancel the person's queued and running jobs that their grants no longer allow, and say why."""
    for job in mine:
        if job.is_finished:
            continue
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


def _resolve_claims(cluster: Cluster, person, mine: list[Job], report: Report) -> None:
    """Unconfirmed (or abandoned) claims against the person's full queue: confirm by tag, or give up."""
    now = timezone.now()
    tagged = {j.comment: j for j in mine if j.comment}
    claims = JobRecord.objects.filter(cluster=cluster, person=person, slurm_job_id__isnull=True).exclude(
        submit_tag=""
    )
    for claim in claims:
        if claim.unconfirmed_since is None and claim.created > now - STALE_CLAIM:
            continue  # in flight: its worker records the answer
        try:
            job = tagged.get(claim.submit_tag)
            if job is not None:
                _confirm(claim, job, report)
            elif (claim.unconfirmed_since or claim.created) < now - confirm_window():
                _give_up(claim, report)
        except Exception as e:  # one bad claim must not stop the round
            log.exception("sync: claim %s on %s", claim.pk, cluster.slug)
            report.errors.append(f"{cluster.slug}/claim {claim.pk}: {type(e).__name__}: {e}")


def _confirm(claim: JobRecord, job: Job, report: Report) -> None:
    """The job of an unanswered submit is in the queue: it becomes the claim's record, its budget attached."""
    with transaction.atomic():
        taken = JobRecord.objects.filter(pk=claim.pk, slurm_job_id__isnull=True).update(
            slurm_job_id=job.job_id, unconfirmed_since=None, updated=timezone.now()
        )
        if not taken:
            return
        if claim.reservation_id is not None:
            ledger.attach(claim.reservation_id, job.job_id)
    claim.refresh_from_db()
    audit(
        "job.submit",
        actor=claim.person,
        cluster=claim.cluster,
        target=f"job {job.job_id}",
        message=(
            f"Job {job.job_id} ({job.name or 'no name'}) was queued on {job.partition} as "
            f"{claim.posix_user}; its submit got no answer, and the sync loop found it by its tag."
        ),
        details={
            "job_id": job.job_id,
            "script_path": claim.script_path,
            "reservation_id": claim.reservation_id,
            "submit_tag": claim.submit_tag,
            "confirmed_by": "sync",
        },
    )
    report.confirmed += 1
    apply(claim, job, report)


def _give_up(claim: JobRecord, report: Report) -> None:
    """The unanswered submit's job is not in the queue after the window: nothing was queued."""
    _drop_claim(
        claim,
        report,
        release_note="the submit got no answer and Slurm never listed the job",
        reason="not_queued",
        message=(
            f"The submit of {claim.script_path} that got no answer was not queued: {claim.cluster.name} "
            "never listed the job, so its budget reservation was released."
        ),
    )


def _drop_claim(claim: JobRecord, report: Report, *, release_note: str, reason: str, message: str) -> None:
    """Remove a claim that never became a job, give its budget back and say why in the audit log."""
    rid = claim.reservation_id
    try:
        with transaction.atomic():
            # Locked and re-read, so a submit that just finished in another worker is not undone.
            fresh = (
                JobRecord.objects.select_for_update().filter(pk=claim.pk, slurm_job_id__isnull=True).first()
            )
            if fresh is None:
                return
            if rid is not None:
                ledger.release(rid, release_note)
            fresh.delete()
    except Exception as e:
        report.errors.append(f"release reservation {rid} of claim {claim.pk}: {e}")
        return
    audit(
        "job.submit",
        actor=claim.person,
        cluster=claim.cluster,
        target=claim.script_path,
        outcome="error",
        reason=reason,
        message=message,
        details={"script_path": claim.script_path, "reservation_id": rid, "submit_tag": claim.submit_tag},
    )
    report.released += 1


def _before(job: Job, since: datetime | None) -> bool:
    # Slurm keeps whole seconds: a job from the account's first second still counts as after it.
    if since is None or job.submit_time is None:
        return False
    return job.submit_time < since - timedelta(seconds=1)


def _adopt(cluster: Cluster, person, name: str, job: Job) -> JobRecord:
    """A JobRecord for a job submitted outside the console (sbatch in a terminal, a cron job)."""
    record = JobRecord.objects.create(
        cluster=cluster,
        person=person,
        posix_user=name,
        slurm_job_id=job.job_id,
        origin=JobRecord.Origin.OUTSIDE,
        ledger=Ledger.NONE,
    )
    audit(
        "job.seen_outside",
        actor=person,
        cluster=cluster,
        target=f"job {job.job_id}",
        message=f"Job {job.job_id} ({job.name or 'no name'}) of {name} was submitted outside the console.",
        details={"job_id": job.job_id, "partition": job.partition, "state": job.state},
    )
    return record


def _forgotten(cluster: Cluster, name: str, listed: set[int], report: Report, client) -> None:
    """Active records whose job the queue no longer lists: ask for the job once, then sacct."""
    stale = (
        JobRecord.objects.active().filter(cluster=cluster, posix_user=name).exclude(slurm_job_id__in=listed)
    )
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


def from_sacct(cluster: Cluster, name: str, job_id: int) -> Job | None:
    """A finished job from accounting, read with sacct as its owner on the head node; None if unknown.

    Its last run is the job; the runs before it (a requeued job) are counted in `restarts`.
    """
    listed = accounting.runs(cluster, name, job_id)
    if not listed:
        return None
    last = listed[-1]
    status = accounting.exit_status(cluster, name, job_id)
    exit_code, exit_signal = status or (last.exit_code, last.exit_signal)
    return Job(
        job_id=job_id,
        name=last.name,
        user_name=name,
        partition=last.partition,
        state=last.state,
        exit_code=exit_code,
        exit_signal=exit_signal,
        submit_time=last.submit_time,
        start_time=last.start_time,
        end_time=last.end_time,
        cpus=last.cpus,
        gpus=last.gpus,
        nodes=last.nodes,
        working_directory=last.working_directory,
        restarts=len(listed) - 1,
    )


# --- one round ----------------------------------------------------------------------------------


def release_stale_claims(report: Report) -> None:
    """Claims no round could settle within STALE_CLAIM (a dead worker's, or one whose owner's queue
    could not be read): give their budget back. A job of theirs that shows up later is adopted."""
    cutoff = timezone.now() - STALE_CLAIM
    for claim in JobRecord.objects.filter(slurm_job_id__isnull=True, created__lt=cutoff).select_related(
        "cluster", "person"
    ):
        _drop_claim(
            claim,
            report,
            release_note="the submit never completed",
            reason="submit_abandoned",
            message=(
                f"The submit of {claim.script_path} never completed; its budget reservation was released "
                f"after {int(STALE_CLAIM.total_seconds() // 60)} minutes."
            ),
        )


def sync_once() -> Report:
    """One round over every cluster and every person with a ready account there."""
    report = Report()
    started = timezone.now()
    rows = (
        ClusterAccount.objects.filter(
            state=ClusterAccount.State.READY, cluster__enabled=True, account__user__is_active=True
        )
        .select_related("account__user", "cluster")
        .order_by("cluster_id", "account__username")
    )
    for row in rows:
        sync_account(row, report)
    # After the queues: a claim whose owner's queue was read has been matched by its tag or given up.
    release_stale_claims(report)
    enforce_policy(report, started)
    # IdPs that push nothing: are the people signed in through them still accepted there?
    checked = idp_check.check_due()
    report.offboarded += checked.offboarded
    # Where the console's policy is the cluster's (the Slurm plugin enforces it), no grant means no account.
    for cluster in Cluster.objects.filter(enabled=True, enforce_policy=True):
        locked, errors = suspensions.suspend_ungranted(cluster)
        report.suspended += locked
        report.errors += errors
    return report


def enforce_policy(report: Report, started: datetime) -> None:
    """Republish the policy where Slurm enforces it, and audit what its plugin refused."""
    unread = {error.split("/", 1)[0] for error in report.errors}
    for cluster in Cluster.objects.filter(enforce_policy=True):
        try:
            snapshot.publish(cluster, settled_through=None if cluster.slug in unread else started)
            report.refused += snapshot.collect_refusals(cluster)
            changed, errors = limits.reconcile_cluster(cluster)
            report.limited += changed
            report.errors += errors
        except Exception as e:  # one cluster's head node must not stop the loop
            log.exception("sync: policy of %s", cluster.slug)
            report.errors.append(f"{cluster.slug}/policy: {type(e).__name__}: {e}")


# --- only one loop at a time --------------------------------------------------------------------


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class SyncLockHeld(Exception):
    """Another sync loop is active."""


@contextmanager
def single_instance(holder: str | None = None) -> Iterator[SingleInstance]:
    """Hold the sync lock for the block; SyncLockHeld if another loop has it."""
    lock = SingleInstance(holder or holder_name())
    if not lock.acquire():
        raise SyncLockHeld("another sync_jobs loop holds the lock")
    try:
        yield lock
    finally:
        lock.release()


class SingleInstance:
    """The database lock: advisory on PostgreSQL, a row with an expiry elsewhere."""

    def __init__(self, holder: str) -> None:
        self.holder = holder
        self.held = False

    @property
    def advisory(self) -> bool:
        return connection.vendor == "postgresql"

    def acquire(self) -> bool:
        if self.advisory:
            with connection.cursor() as cursor:
                if self.held and self._still_held(cursor):
                    return True
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_KEY])
                self.held = bool(cursor.fetchone()[0])
            return self.held
        self.held = self._take_row()
        return self.held

    def refresh(self) -> bool:
        """Still ours? (A dropped connection loses an advisory lock; a row lock must be renewed.)"""
        return self.acquire()

    def release(self) -> None:
        if not self.held:
            return
        if self.advisory:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_KEY])
        else:
            SyncLock.objects.filter(name=LOCK_NAME, holder=self.holder).update(holder="", expires=None)
        self.held = False

    @staticmethod
    def _still_held(cursor) -> bool:
        cursor.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
            "AND granted AND ((classid::bigint << 32) | objid::bigint) = %s",
            [ADVISORY_KEY],
        )
        return cursor.fetchone() is not None

    def _take_row(self) -> bool:
        now = timezone.now()
        expires = now + timedelta(seconds=LOCK_ROW_SECONDS)
        try:
            with transaction.atomic():
                SyncLock.objects.get_or_create(name=LOCK_NAME)
        except IntegrityError:
            pass
        taken = (
            SyncLock.objects.filter(name=LOCK_NAME)
            .filter(_free_or_mine(self.holder, now))
            .update(holder=self.holder, expires=expires)
        )
        return bool(taken)


def _free_or_mine(holder: str, now: datetime) -> Q:
    return Q(holder="") | Q(holder=holder) | Q(expires__isnull=True) | Q(expires__lt=now)


# An idle loop writes one line in this many rounds (10 minutes at the default 10 s interval).
QUIET_NOTE_ROUNDS = 60


def run_forever(interval: float, *, stdout=None, rounds: int | None = None) -> None:
    """Poll every `interval` seconds while holding the lock; wait as a standby while another loop does."""
    lock = SingleInstance(holder_name())
    waiting_said = False
    done = 0
    quiet = 0
    try:
        while rounds is None or done < rounds:
            started = time.monotonic()
            if lock.refresh():
                waiting_said = False
                report = sync_once()
                done += 1
                # A line per round that did something; an idle loop says so once every QUIET_NOTE_ROUNDS
                # rounds instead of every few seconds, so the demo's console log stays readable.
                quiet = 0 if report.eventful else quiet + 1
                if stdout is not None and (quiet == 0 or quiet % QUIET_NOTE_ROUNDS == 1):
                    note = "" if quiet <= 1 else f" (the last {quiet - 1} rounds changed nothing)"
                    stdout.write(f"{timezone.now():%H:%M:%S} {report.summary()}{note}\n")
            elif not waiting_said and stdout is not None:
                stdout.write("Another sync_jobs loop is active; waiting as a standby.\n")
                waiting_said = True
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    finally:
        lock.release()
