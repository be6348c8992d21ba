"""One existing job: who may see it, its live state, and cancelling it as its owner.

Someone else's job answers exactly like a job that does not exist (404 "You have no
job N on …") unless `access.policy` lets the person view it (an operator, say): with
`PrivateData=jobs` Slurm itself hides other people's jobs, and the console must not
be the place where their existence leaks.

A job is named as Slurm's commands take it: `123` (a job, or a whole job array) or `123_4` (task 4
of array 123); a task may also be named by its own job id.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from django.urls import register_converter

from access import policy, refusals
from access.arrays import holds_task
from accounts.slurm_access import ProvisioningError, SlurmAccessRefused, slurm_for
from audit.log import record as audit
from clusters import tokens
from clusters.models import Cluster
from clusters.refusal import Refusal
from clusters.slurm import SlurmError, SlurmNotFound, SlurmPermissionDenied, SlurmUnavailable
from jobs import tracking
from jobs.models import JobRecord
from prepared import Prepared, fields_of, instance

log = logging.getLogger("clusterra.jobs")


class JobError(Refusal):
    """The action on a job did not happen; `decision` is the policy's when it was the one to say no."""

    def __init__(self, message: str, *, code: str, status: int = 400, decision: Any = None) -> None:
        super().__init__(message, code=code, status=status)
        self.decision = decision


# A job as Slurm's commands name it; the page and /v1 routes match only this (jobs.urls, jobs.api).
JOB_ID_PATTERN = "[0-9]+(?:_[0-9]+)?"
_JOB_ID = re.compile(r"([0-9]{1,20})(?:_([0-9]{1,20}))?")
# Slurm's job ids and task indexes are 32-bit; a larger number names no job (and no database row).
_LARGEST_ID = 2**31 - 1


@dataclass(frozen=True)
class JobRef:
    """A job as a person names it: `123`, or `123_4` for task 4 of array 123."""

    job_id: int
    task_id: int | None = None

    def __str__(self) -> str:
        return str(self.job_id) if self.task_id is None else f"{self.job_id}_{self.task_id}"


class JobIdConverter:
    """`<jobid:job_id>` in a route: 123, or 123_4 for task 4 of array 123; anything else is no route."""

    regex = JOB_ID_PATTERN

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: object) -> str:
        return str(value)


register_converter(JobIdConverter, "jobid")


def job_ref(value: int | str | JobRef) -> JobRef:
    """`value` read as a job id; JobError(400) that says what a job id looks like otherwise."""
    if isinstance(value, JobRef):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return JobRef(value)
    text = str(value).strip()
    found = _JOB_ID.fullmatch(text) if text.isascii() else None
    if found is None:
        shown = text if len(text) <= 30 else text[:30] + "…"
        raise JobError(
            f"{shown!r} is not a job id; give a Slurm job id such as 123, or 123_4 for task 4 of array 123.",
            code="invalid_job_id",
        )
    task = found.group(2)
    return JobRef(int(found.group(1)), int(task) if task is not None else None)


def not_found(cluster: Cluster, job_id: int | str | JobRef) -> JobError:
    return JobError(f"You have no job {job_id} on {cluster.name}.", code="not_found", status=404)


# A job's page and `GET /v1/…/jobs/{id}` look the job up by its Slurm id every time: compiled once.
_TOP = Prepared(
    lambda cluster_id, job_id: (
        JobRecord.objects.submitted()
        .filter(cluster_id=cluster_id, slurm_job_id=job_id, array_parent__isnull=True)
        .order_by("-created")
        .values(*fields_of(JobRecord))[:1]
    ),
    int,
    int,
)


def _lookup(cluster: Cluster, ref: JobRef) -> tuple[JobRecord | None, JobRecord | None]:
    """(the record named, the array it belongs to): the array alone when the task has no record yet."""
    if ref.job_id > _LARGEST_ID or (ref.task_id or 0) > _LARGEST_ID:
        return None, None
    rows = _TOP.rows(cluster.pk, ref.job_id)
    top = instance(JobRecord, rows[0]) if rows else None
    if top is not None:
        top.cluster = cluster
    if ref.task_id is None:
        if top is not None:
            return top, None
        # A task named by its own job id.
        task = (
            JobRecord.objects.select_related("cluster", "array_parent")
            .filter(cluster=cluster, slurm_job_id=ref.job_id, array_parent__isnull=False)
            .order_by("-created")
            .first()
        )
        return task, task.array_parent if task else None
    if top is None or not top.is_array:
        return None, None
    task = top.tasks.select_related("cluster").filter(array_task_id=ref.task_id).first()
    if task is not None:
        task.array_parent = top
    return task, top


def visible_job(
    person: Any,
    cluster: Cluster,
    job_id: int | str | JobRef,
    *,
    action: str = "job.view",
    request: Any = None,
) -> JobRecord:
    """The record of job `job_id` ("123" or "123_4") if `person` may see it (or cancel it).

    JobError(400) for something that is no job id, (404/403) otherwise. A refusal by the policy is
    audited under `action`; a job that does not exist is not. A task of an array that Slurm still
    holds in the array's own record has no record of its own yet: 404, saying so.
    """
    ref = job_ref(job_id)
    record, array = _lookup(cluster, ref)
    owner = record or array
    if owner is None:
        raise not_found(cluster, ref)
    _check(person, action, cluster, owner, ref, request)
    if record is None:
        if _may_hold(array, ref.task_id):
            raise JobError(
                f"Task {ref.task_id} of array {ref.job_id} has not started yet; Slurm still holds it in "
                f"the array (job {ref.job_id}).",
                code="not_found",
                status=404,
            )
        raise not_found(cluster, ref)
    return record


def _check(person: Any, action: str, cluster: Cluster, record: JobRecord, ref: JobRef, request: Any) -> None:
    decision = policy.decide(person, action, cluster, job_owner=record.posix_user)
    if not decision.allowed:
        refusals.record(
            person, cluster, decision, request=request, target=f"job {ref}", details=_details(ref)
        )
        if record.person_id != person.pk:
            raise not_found(cluster, ref)
        raise JobError(decision.message, code=decision.code, status=403, decision=decision)


def _may_hold(array: JobRecord, task_id: int | None) -> bool:
    """Whether the array may still hold task `task_id` unstarted (Slurm names them when it lists them)."""
    held = array.array_summary.get("held", "")
    if held:
        return task_id is not None and holds_task(held, task_id)
    return not array.is_finished


def _details(ref: JobRef) -> dict[str, int]:
    return {"job_id": ref.job_id} | ({"array_task_id": ref.task_id} if ref.task_id is not None else {})


def refresh(person: Any, record: JobRecord) -> str:
    """Bring an unfinished record up to date from Slurm now; returns a note when that was not possible.

    Only the owner's token can see the job (PrivateData), so another viewer gets the
    record as the sync loop last saw it. An array, or one of its tasks, is refreshed whole.
    """
    if record.person_id != person.pk:
        return ""
    if record.is_array or record.is_array_task:
        array = record.array_parent if record.is_array_task else record
        if array.is_finished and record.is_finished:
            return ""
        note = _refresh_array(person, array)
        record.refresh_from_db()
        return note
    if record.is_finished:
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


def _refresh_array(person: Any, array: JobRecord) -> str:
    """The array and its tasks from the person's queue (or from accounting once Slurm forgot it)."""
    try:
        client = slurm_for(person, array.cluster, provision=False)
        listing = client.jobs()
    except (SlurmError, SlurmAccessRefused, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        return f"The live state could not be read ({e}); the state shown is the last one seen."
    members = [j for j in listing.jobs if j.array_job_id == array.slurm_job_id]
    if not members:
        members = tracking.array_from_sacct(array.cluster, array.posix_user, array.slurm_job_id) or []
        if not members:
            return "Slurm no longer reports this array; the state shown is the last one seen."
    tracking.apply_array(array, members)
    return ""


def cancel(person: Any, cluster: Cluster, job_id: int | str | JobRef, *, request: Any = None) -> JobRecord:
    """Cancel one of the person's jobs as them; the record afterwards, with the state Slurm then reports.

    `job_id` is "123" (a job, or a whole array) or "123_4" (one task of array 123, started or not).
    """
    ref = job_ref(job_id)
    record, array = _lookup(cluster, ref)
    if record is None and array is None:
        raise not_found(cluster, ref)
    _check(person, "job.cancel", cluster, record or array, ref, request)
    if record is None and not _may_hold(array, ref.task_id):
        raise not_found(cluster, ref)
    if record is not None and record.is_array_task and ref.task_id is None:
        ref = JobRef(record.array_parent.slurm_job_id, record.array_task_id)  # named by its own job id
    job_id = str(ref)
    if record is not None and record.is_finished:
        raise JobError(
            f"Job {job_id} already ended ({record.state}); there is nothing to cancel.",
            code="already_finished",
            status=409,
        )
    record = record or array
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
    if ref.task_id is not None and record.is_array:
        # A task cancelled while the array held it is a record of its own now, if Slurm listed it.
        record = record.tasks.filter(array_task_id=ref.task_id).first() or record
    record.refresh_from_db()
    return record


def _audit(
    person: Any, cluster: Cluster, job_id: str, request: Any, outcome: str, reason: str, message: str
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
        details=_details(job_ref(job_id)),
    )
