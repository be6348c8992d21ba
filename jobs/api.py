"""The /v1 job routes: list and submit, show and cancel, output; the site's one API mounts this router.

Query values arrive as text and are checked here, by the same functions the pages use, so a
wrong one is refused with the sentence the pages show; the document still says what they hold.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from django.http import HttpRequest, HttpResponse
from ninja import Header, Path, Query, Router
from ninja.responses import Status
from pydantic import WithJsonSchema

from access import policy, refusals
from accounts.api import ClusterId, answers, cluster_or_404
from clusters.refusal import Refusal
from jobs import control, output, present
from jobs.schemas import CancelResult, JobDetail, JobList, JobOutput, SubmitResult
from jobs.submit import Outcome, decision_dict, submit
from jobs.submit_request import SubmitRequest

router = Router(tags=["jobs"])

# 9999-12-31T23:59:59Z, the last moment a datetime can hold.
LATEST_TIMESTAMP = 253402300799

# Text, read by jobs.control.job_ref; a path that is no job id matches no route (404 in the error shape).
JobId = Annotated[
    str,
    WithJsonSchema({"type": "string", "pattern": "^[0-9]+(_[0-9]+)?$"}),
    Path(description="The Slurm job id: 123 (a job, or a whole job array), or 123_4 (task 4 of array 123)."),
]


def _text(description: str, schema: dict[str, Any]) -> Any:
    """A query value taken as text, checked by the handler; `schema` is what the document says it holds."""
    return Annotated[str | None, WithJsonSchema(schema), Query(None, description=description)]


def _whole_number(raw: str | None, name: str, default: int, *, maximum: int) -> int:
    return present.whole_number(raw, name, maximum=maximum) if raw else default


@router.get(
    "/clusters/{slug:id}/jobs",
    url_name="v1-jobs",
    operation_id="listJobs",
    summary="Your jobs on the cluster, newest first",
    description="Jobs submitted through the console and those the sync loop saw you submit elsewhere "
    "(sbatch in a terminal). States are Slurm's words.",
    **answers(
        {200: (JobList, "One page of your jobs; with update_time only the jobs that changed since.")},
        400,
        401,
        403,
        404,
    ),
)
def list_jobs(
    request: HttpRequest,
    id: ClusterId,
    state: _text(
        "Comma-separated Slurm states (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, …), "
        "or `active` / `finished`. Case does not matter.",
        {"type": "string"},
    ) = None,
    partition: _text("Only jobs in this partition.", {"type": "string"}) = None,
    page: _text(
        "Page number, from 1. A page past the last answers with the last page (the answer's `page` says "
        "which); anything but a whole number from 1 is a 400.",
        {"type": "integer", "minimum": 1, "default": 1},
    ) = None,
    per_page: _text(
        "Jobs per page (at most 200).", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    ) = None,
    update_time: _text(
        "Seconds since the epoch, as a previous answer's `update_time`: only jobs changed since then.",
        {"type": "number"},
    ) = None,
) -> dict[str, Any]:
    cluster = cluster_or_404(id)
    # Without job_owner the policy answers for the job list as a whole.
    decision = policy.decide(request.user, "job.view", cluster)
    if not decision.allowed:
        refusals.record(request.user, cluster, decision, request=request)
        raise Refusal(decision.message, code=decision.code, status=403)
    states = present.states_filter(state)
    page_number = present.page_number(page)
    since_value = None
    if update_time not in (None, ""):
        try:
            since_value = float(update_time)
        except ValueError:
            since_value = math.nan
        # nan, inf and times past the year 9999 would fail later, as a 500, turning into a datetime.
        if not 0 <= since_value <= LATEST_TIMESTAMP:
            raise Refusal(
                f"update_time must be seconds since the epoch, not {update_time!r}.", code="invalid_request"
            )
    return present.page_of(
        request.user,
        cluster,
        states=states,
        partition=partition or None,
        page=page_number,
        per_page=_whole_number(per_page, "per_page", present.DEFAULT_PER_PAGE, maximum=present.MAX_PER_PAGE),
        since=since_value,
    ).as_dict()


def outcome_dict(outcome: Outcome) -> dict:
    body: dict = {
        "dry_run": outcome.dry_run,
        "replayed": outcome.replayed,
        "decision": decision_dict(outcome.decision),
        "warnings": list(outcome.warnings),
    }
    if outcome.record is not None:
        body["job"] = present.job_dict(outcome.record)
    if outcome.plan is not None:
        body["final_job"] = outcome.plan.job_dict()
        body["directives"] = outcome.plan.directive_list()
        body["cost"] = outcome.plan.cost_dict()
    elif outcome.record is not None and outcome.record.submitted:
        body["final_job"] = outcome.record.submitted.get("job", {})
        body["directives"] = outcome.record.submitted.get("directives", [])
        body["cost"] = outcome.record.submitted.get("cost", {})
    return body


@router.post(
    "/clusters/{slug:id}/jobs",
    url_name="v1-jobs",
    operation_id="submitJob",
    summary="Submit a job script that is on the cluster",
    description="The script is read as you on the head node; its #SBATCH directives are merged with the "
    "fields here (the fields win); the policy decides and reserves budget; then Slurm queues it. "
    "A denial is 403 with the decision's sentence and nothing reaches Slurm.",
    # The job, the final job, directives and cost are there when there is one: left out, not null.
    exclude_unset=True,
    **answers(
        {
            200: (
                SubmitResult,
                "A dry run's decision and final job, or the job an earlier request with the same "
                "Idempotency-Key queued.",
            ),
            201: (SubmitResult, "The job is queued."),
        },
        400,
        401,
        403,
        404,
        409,
        415,
        502,
    ),
)
def submit_job(
    request: HttpRequest,
    response: HttpResponse,
    id: ClusterId,
    body: SubmitRequest,
    dry_run: _text(
        "`1` to get the decision and the final job without queueing anything.",
        {"type": "string", "enum": ["0", "1", "true", "false"]},
    ) = None,
    idempotency_key: Annotated[
        str | None,
        WithJsonSchema({"type": "string", "maxLength": 255}),
        Header(
            None,
            alias="Idempotency-Key",
            description="Any unique string (a UUID): a retry with the same key and body returns the first "
            "job instead of queueing another; the same key with another body is 409.",
        ),
    ] = None,
) -> Status:
    cluster = cluster_or_404(id)
    outcome = submit(
        request.user,
        cluster,
        body,
        dry_run=(dry_run or "").strip().lower() in ("1", "true", "yes", "on"),
        idempotency_key=idempotency_key or "",
        request=request,
    )
    if outcome.replayed:
        response["Idempotent-Replayed"] = "true"
    if outcome.record is not None:
        response["Location"] = f"/v1/clusters/{cluster.slug}/jobs/{outcome.record.slurm_job_id}"
    return Status(200 if outcome.dry_run or outcome.replayed else 201, outcome_dict(outcome))


@router.get(
    "/clusters/{slug:id}/jobs/{jobid:job_id}",
    url_name="v1-job",
    operation_id="getJob",
    summary="One of your jobs, its state read live from Slurm",
    description="A job array answers with its tasks by state (`tasks`); `123_4` answers with task 4 of it.",
    **answers(
        {200: (JobDetail, "The job; `note` says when the live state could not be read.")}, 401, 403, 404
    ),
)
def show_job(request: HttpRequest, id: ClusterId, job_id: JobId) -> dict[str, Any]:
    cluster = cluster_or_404(id)
    record = control.visible_job(request.user, cluster, job_id, request=request)
    note = control.refresh(request.user, record)
    return {"job": present.job_dict(record), "note": note}


@router.delete(
    "/clusters/{slug:id}/jobs/{jobid:job_id}",
    url_name="v1-job",
    operation_id="cancelJob",
    summary="Cancel one of your jobs",
    description="`123` cancels a job, or every task of job array 123; `123_4` cancels task 4 only.",
    **answers(
        {200: (CancelResult, "Cancelled; the job as Slurm reports it afterwards.")},
        401,
        403,
        404,
        409,
        502,
    ),
)
def cancel_job(request: HttpRequest, id: ClusterId, job_id: JobId) -> dict[str, Any]:
    cluster = cluster_or_404(id)
    ref = control.job_ref(job_id)
    record = control.cancel(request.user, cluster, ref, request=request)
    what = "Every task of job array" if record.is_array and ref.task_id is None else "Job"
    return {"job": present.job_dict(record), "message": f"{what} {ref} was cancelled."}


@router.get(
    "/clusters/{slug:id}/jobs/{jobid:job_id}/output",
    url_name="v1-job-output",
    operation_id="getJobOutput",
    summary="The last lines of a job's stdout and stderr, read as the job's owner",
    # A stream not asked for is left out, not null.
    exclude_unset=True,
    **answers(
        {200: (JobOutput, "Each stream's text, or why it cannot be shown (`error`).")}, 400, 401, 403, 404
    ),
)
def job_output(
    request: HttpRequest,
    id: ClusterId,
    job_id: JobId,
    lines: _text(
        "How many lines from the end (at most 2000).",
        {"type": "integer", "minimum": 1, "maximum": 2000, "default": 50},
    ) = None,
    stream: _text(
        "Which stream.", {"type": "string", "enum": ["stdout", "stderr", "both"], "default": "both"}
    ) = None,
) -> dict[str, Any]:
    cluster = cluster_or_404(id)
    record = control.visible_job(request.user, cluster, job_id, request=request)
    if record.is_array:
        raise Refusal(
            f"Job {job_id} is a job array: each task writes its own output; ask for one task's, "
            f"e.g. {job_id}_{_first_task(record)}.",
            code="array_output",
        )
    count = _whole_number(lines, "lines", output.DEFAULT_LINES, maximum=output.MAX_LINES)
    stream = "both" if stream is None else stream
    if stream not in ("stdout", "stderr", "both"):
        raise Refusal("stream must be stdout, stderr or both.", code="invalid_request")
    body: dict[str, Any] = {"job_id": record.slurm_job_id, "lines": count}
    streams = ("stdout", "stderr") if stream == "both" else (stream,)
    same_file = record.stdout_path == record.stderr_path
    for name in streams:
        if name == "stderr" and same_file and "stdout" in body:
            # Slurm writes both streams to one file unless the job said otherwise.
            body["stderr"] = {**body["stdout"], "same_as_stdout": True}
            continue
        body[name] = {
            **output.tail(record, name, count).as_dict(),
            "same_as_stdout": name == "stderr" and same_file,
        }
    return body


def _first_task(array: Any) -> int:
    first = array.tasks.order_by("array_task_id").values_list("array_task_id", flat=True).first()
    return first if first is not None else 0
