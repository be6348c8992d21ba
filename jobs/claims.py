"""Submits whose answer was lost: a claim confirmed by its tag in the person's queue, or given up.

A claim whose submit got no usable answer (jobs.submit) keeps its reservation. The job
carrying the claim's tag (in its Slurm `extra`, or its comment) becomes the claim's record (attached, then
followed like any other); if the person's full queue still lists no such job once the
confirmation window has passed, the reservation is released and the claim removed. The
window only has to outlast a request still on its way through slurmrestd: a queued job
stays listed until MinJobAge after it ends, and a round that cannot read the queue decides
nothing. Claims left by a worker that died mid-submit are resolved the same way after
STALE_CLAIM, and any claim still there after it (its owner's queue could not be read) is
released by `release_stale_claims`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from access import ledger
from audit.log import record as audit
from clusters.models import Cluster
from clusters.slurm import Job
from jobs.models import JobRecord
from jobs.tracking import Report, apply

log = logging.getLogger("clusterra.jobs.sync")

# A claim (submit in flight) older than this belongs to a worker that died mid-submit.
STALE_CLAIM = timedelta(minutes=10)


def commit_window() -> timedelta:
    """How long a submit's transaction may stay open after slurmrestd queued its job (jobs.submit).

    The submit records its job in the same transaction that reserved it, so a job can be listed by
    Slurm before its record is visible: until the slurmrestd call's own timeouts have run out (twice:
    the client may retry once), plus a minute for the commit and for slurmctld's clock.
    """
    call = settings.SLURM_CONNECT_TIMEOUT + settings.SLURM_READ_TIMEOUT
    return timedelta(seconds=2 * call + 60)


def may_be_committing(job: Job, now: datetime | None = None) -> bool:
    """A job the console tagged and Slurm queued so recently that its submit may not have committed yet.

    The sync loop leaves such a job alone for a round instead of adopting it as an outside job: its
    record is about to appear. A job still unknown after `commit_window` was queued by a submit that
    died before its commit, and is adopted like one from a shell (the job_submit plugin bounded it).
    """
    if not any(tag.startswith("clusterra:") for tag in (job.extra, job.comment)):
        return False
    if job.submit_time is None:
        return False
    return job.submit_time > (now or timezone.now()) - commit_window()


def confirm_window() -> timedelta:
    """How long an unconfirmed submit waits for its job to appear before its reservation is released."""
    return timedelta(seconds=settings.CLUSTERRA_SUBMIT_CONFIRM_SECONDS)


def resolve(cluster: Cluster, person, mine: list[Job], report: Report) -> None:
    """Unconfirmed (or abandoned) claims against the person's full queue: confirm by tag, or give up."""
    now = timezone.now()
    # The tag is in `extra` (v0.0.40+), or in the comment on v0.0.38 when the script left it free; a v0.0.38
    # job with its own --comment cannot be found this way, and is followed like a job from a shell instead.
    tagged = {tag: j for j in mine for tag in (j.extra, j.comment) if tag.startswith("clusterra:")}
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
    """The job of an unanswered submit is in the queue: it becomes the claim's record, its budget attached.

    An array's tasks carry its tag too: the claim becomes the array (its id), and the sync loop then
    applies the array's records to it.
    """
    job_id = job.array_job_id or job.job_id
    with transaction.atomic():
        taken = JobRecord.objects.filter(pk=claim.pk, slurm_job_id__isnull=True).update(
            slurm_job_id=job_id, unconfirmed_since=None, updated=timezone.now()
        )
        if not taken:
            return
        if claim.reservation_id is not None:
            ledger.attach(claim.reservation_id, job_id)
    claim.refresh_from_db()
    audit(
        "job.submit",
        actor=claim.person,
        cluster=claim.cluster,
        target=f"job {job_id}",
        message=(
            f"Job {job_id} ({job.name or 'no name'}) was queued on {job.partition} as "
            f"{claim.posix_user}; its submit got no answer, and the sync loop found it by its tag."
        ),
        details={
            "job_id": job_id,
            "script_path": claim.script_path,
            "reservation_id": claim.reservation_id,
            "submit_tag": claim.submit_tag,
            "confirmed_by": "sync",
        },
    )
    report.confirmed += 1
    if job.array_job_id is None:
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
