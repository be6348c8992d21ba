"""One existing job: who may see it, its live state, and cancelling it as its owner.

Someone else's job answers exactly like a job that does not exist (404 "You have no
job N on …") unless `access.policy` lets the person view it (an operator, say): with
`PrivateData=jobs` Slurm itself hides other people's jobs, and the console must not
be the place where their existence leaks.
"""

from __future__ import annotations

import logging
from typing import Any

from access import policy, refusals
from accounts.slurm_access import ProvisioningError, SlurmAccessRefused, slurm_for
from audit.log import record as audit
from clusters import tokens
from clusters.models import Cluster
from clusters.refusal import Refusal
from clusters.slurm import SlurmError, SlurmNotFound, SlurmPermissionDenied, SlurmUnavailable
from jobs import tracking
from jobs.models import JobRecord

log = logging.getLogger("clusterra.jobs")


class JobError(Refusal):
    """The action on a job did not happen; `decision` is the policy's when it was the one to say no."""

    def __init__(self, message: str, *, code: str, status: int = 400, decision: Any = None) -> None:
        super().__init__(message, code=code, status=status)
        self.decision = decision


def not_found(cluster: Cluster, job_id: int) -> JobError:
    return JobError(f"You have no job {job_id} on {cluster.name}.", code="not_found", status=404)


def visible_job(
    person: Any, cluster: Cluster, job_id: int, *, action: str = "job.view", request: Any = None
) -> JobRecord:
    """The record of job `job_id` if `person` may see it (or cancel it); JobError(404/403) otherwise.

    A refusal by the policy is audited under `action`; a job that does not exist is not.
    """
    record = (
        JobRecord.objects.submitted()
        .select_related("cluster")
        .filter(cluster=cluster, slurm_job_id=job_id)
        .order_by("-created")
        .first()
    )
    if record is None:
        raise not_found(cluster, job_id)
    decision = policy.decide(person, action, cluster, job_owner=record.posix_user)
    if not decision.allowed:
        refusals.record(
            person, cluster, decision, request=request, target=f"job {job_id}", details={"job_id": job_id}
        )
        if record.person_id != person.pk:
            raise not_found(cluster, job_id)
        raise JobError(decision.message, code=decision.code, status=403, decision=decision)
    return record


def refresh(person: Any, record: JobRecord) -> str:
    """Bring an unfinished record up to date from Slurm now; returns a note when that was not possible.

    Only the owner's token can see the job (PrivateData), so another viewer gets the
    record as the sync loop last saw it.
    """
    if record.is_finished or record.person_id != person.pk:
        return ""
    try:
        client = slurm_for(person, record.cluster, provision=False)
        job = client.job(record.slurm_job_id)
    except SlurmNotFound:
        job = tracking.from_sacct(record.cluster, record.posix_user, record.slurm_job_id)
        if job is None:
            return "Slurm no longer reports this job; the state shown is the last one seen."
    except (SlurmError, SlurmAccessRefused, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        return f"The live state could not be read ({e}); the state shown is the last one seen."
    tracking.apply(record, job)
    return ""


def cancel(person: Any, cluster: Cluster, job_id: int, *, request: Any = None) -> JobRecord:
    """Cancel one of the person's jobs as them; the record afterwards, with the state Slurm then reports."""
    record = visible_job(person, cluster, job_id, action="job.cancel", request=request)
    if record.is_finished:
        raise JobError(
            f"Job {job_id} already ended ({record.state}); there is nothing to cancel.",
            code="already_finished",
            status=409,
        )
    try:
        client = slurm_for(person, cluster, request=request)
        client.cancel(job_id)
    except SlurmAccessRefused as e:
        _audit(person, cluster, job_id, request, "denied", e.code, e.message)
        raise
    except ProvisioningError as e:
        # The account could not be made ready (the head node did not answer): the cluster's fault, not a 500.
        message = f"{e.message} The job was not cancelled; try again."
        _audit(person, cluster, job_id, request, "error", f"account_{e.code}", message)
        raise JobError(message, code=f"account_{e.code}", status=502) from None
    except SlurmPermissionDenied as e:
        message = f"Slurm does not let you cancel job {job_id}: {e.message}."
        _audit(person, cluster, job_id, request, "denied", "slurm_denied", message)
        raise JobError(message, code="slurm_denied", status=403) from None
    except SlurmNotFound:
        refresh(person, record)
        record.refresh_from_db()
        if record.is_finished:
            raise JobError(
                f"Job {job_id} already ended ({record.state}).", code="already_finished", status=409
            ) from None
        raise not_found(cluster, job_id) from None
    except (SlurmUnavailable, SlurmError, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        message = f"{cluster.name} did not carry out the cancel ({e}). The job was not cancelled; try again."
        _audit(person, cluster, job_id, request, "error", "cluster_unavailable", message)
        raise JobError(message, code="cluster_unavailable", status=502) from None
    _audit(
        person, cluster, job_id, request, "allowed", "", f"Job {job_id} cancelled by {person.get_username()}."
    )
    note = refresh(person, record)
    if note:
        log.info("after cancelling job %s: %s", job_id, note)
    record.refresh_from_db()
    return record


def _audit(
    person: Any, cluster: Cluster, job_id: int, request: Any, outcome: str, reason: str, message: str
) -> None:
    audit(
        "job.cancel",
        actor=person,
        cluster=cluster,
        target=f"job {job_id}",
        outcome=outcome,
        reason=reason,
        message=message,
        request=request,
        details={"job_id": job_id},
    )
