"""The /v1 job routes: list and submit, show and cancel, output. Plain functions behind jobs.http."""

from __future__ import annotations

import math

from django.http import HttpRequest, JsonResponse

from access import policy
from jobs import control, output, present
from jobs.control import JobError
from jobs.http import ApiError, cluster_or_404, flag, json_body, positive_int
from jobs.submit import Outcome, SubmitError, decision_dict, submit

# 9999-12-31T23:59:59Z, the last moment a datetime can hold.
LATEST_TIMESTAMP = 253402300799


def _job_error(e: JobError) -> ApiError:
    return ApiError(e.status, e.code, e.message)


def list_jobs(request: HttpRequest, id: str) -> JsonResponse:
    cluster = cluster_or_404(id)
    # Without job_owner the policy answers for the job list as a whole.
    decision = policy.decide(request.user, "job.view", cluster, http_request=request)
    if not decision.allowed:
        raise ApiError(403, decision.code, decision.message)
    try:
        states = present.states_filter(request.GET.get("state"))
        page_number = present.page_number(request.GET.get("page"))
    except present.FilterError as e:
        raise ApiError(400, "invalid_request", str(e)) from None
    since = request.GET.get("update_time")
    since_value = None
    if since not in (None, ""):
        try:
            since_value = float(since)
        except ValueError:
            since_value = math.nan
        # nan, inf and times past the year 9999 would fail later, as a 500, turning into a datetime.
        if not 0 <= since_value <= LATEST_TIMESTAMP:
            raise ApiError(
                400, "invalid_request", f"update_time must be seconds since the epoch, not {since!r}."
            )
    page = present.page_of(
        request.user,
        cluster,
        states=states,
        partition=request.GET.get("partition") or None,
        page=page_number,
        per_page=positive_int(request, "per_page", present.DEFAULT_PER_PAGE, maximum=present.MAX_PER_PAGE),
        since=since_value,
    )
    return JsonResponse(page.as_dict())


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


def submit_job(request: HttpRequest, id: str) -> JsonResponse:
    cluster = cluster_or_404(id)
    data = json_body(request)
    try:
        outcome = submit(
            request.user,
            cluster,
            data,
            dry_run=flag(request.GET.get("dry_run")),
            idempotency_key=request.META.get("HTTP_IDEMPOTENCY_KEY", ""),
            request=request,
        )
    except SubmitError as e:
        raise ApiError(e.status, e.code, e.message) from None
    status = 201 if not (outcome.dry_run or outcome.replayed) else 200
    response = JsonResponse(outcome_dict(outcome), status=status)
    if outcome.replayed:
        response["Idempotent-Replayed"] = "true"
    if outcome.record is not None:
        response["Location"] = f"/v1/clusters/{cluster.slug}/jobs/{outcome.record.slurm_job_id}"
    return response


def show_job(request: HttpRequest, id: str, job_id: int) -> JsonResponse:
    cluster = cluster_or_404(id)
    try:
        record = control.visible_job(request.user, cluster, job_id, request=request)
    except JobError as e:
        raise _job_error(e) from None
    note = control.refresh(request.user, record)
    return JsonResponse({"job": present.job_dict(record), "note": note})


def cancel_job(request: HttpRequest, id: str, job_id: int) -> JsonResponse:
    cluster = cluster_or_404(id)
    try:
        record = control.cancel(request.user, cluster, job_id, request=request)
    except JobError as e:
        raise _job_error(e) from None
    return JsonResponse({"job": present.job_dict(record), "message": f"Job {job_id} was cancelled."})


def job_output(request: HttpRequest, id: str, job_id: int) -> JsonResponse:
    cluster = cluster_or_404(id)
    try:
        record = control.visible_job(request.user, cluster, job_id, request=request)
    except JobError as e:
        raise _job_error(e) from None
    lines = positive_int(request, "lines", output.DEFAULT_LINES, maximum=output.MAX_LINES)
    stream = request.GET.get("stream", "both")
    if stream not in ("stdout", "stderr", "both"):
        raise ApiError(400, "invalid_request", "stream must be stdout, stderr or both.")
    body: dict = {"job_id": job_id, "lines": lines}
    streams = ("stdout", "stderr") if stream == "both" else (stream,)
    same_file = record.stdout_path == record.stderr_path
    for name in streams:
        if name == "stderr" and same_file and "stdout" in body:
            # Slurm writes both streams to one file unless the job said otherwise.
            body["stderr"] = {**body["stdout"], "same_as_stdout": True}
            continue
        body[name] = {
            **output.tail(record, name, lines).as_dict(),
            "same_as_stdout": name == "stderr" and same_file,
        }
    return JsonResponse(body)
