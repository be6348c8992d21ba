"""The pages of everyday work: the dashboard, the submit form, the live job list, a job."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from access import policy, refusals
from access.present import quota_panel
from accounts.demo import membership
from clusters import partitions, tokens
from clusters.models import Cluster, cluster_by_slug, enabled_clusters
from clusters.refusal import Refusal
from clusters.slurm import SlurmError
from jobs import control, output, present
from jobs.control import JobError
from jobs.forms import SubmitForm
from jobs.models import JobRecord
from jobs.plan import SubmitError
from jobs.submit import submit
from jobs.submit_request import SubmitRequest

log = logging.getLogger("clusterra.jobs")

LIST_POLL_SECONDS = 3
LIST_DECISION_SECONDS = 60


def _cluster(slug: str) -> Cluster:
    cluster = cluster_by_slug(slug)
    if cluster is None:
        raise Http404(f"There is no cluster {slug!r}.")
    return cluster


# --- dashboard ----------------------------------------------------------------------------------


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    usable, refused = [], []
    for cluster in enabled_clusters():
        decision = policy.decide(request.user, "cluster.view", cluster)
        if decision.allowed:
            usable.append(_cluster_panel(request, cluster))
        else:
            refused.append({"cluster": cluster, "message": decision.message})
    demo = membership.current(request.user)
    context = {"usable": usable, "refused": refused, "demo": demo}
    return render(request, "jobs/dashboard.html", context)


def _cluster_panel(request: HttpRequest, cluster: Cluster) -> dict[str, Any]:
    panel: dict[str, Any] = {"cluster": cluster, "error": "", "partitions": []}
    try:
        known = [p.name for p in partitions.partitions(cluster)]
        granted = policy.granted_partitions(request.user, cluster, known)
        # What the person may use first, then the rest, each in Slurm's order.
        panel["partitions"] = sorted(partitions.views(cluster, granted), key=lambda v: not v.granted)
        panel["nodes"] = partitions.nodes(cluster)
    except (SlurmError, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        panel["error"] = str(e)
    panel.update(quota_panel(request.user, cluster))
    panel["active_jobs"] = present.active_count(request.user, cluster)
    return panel


# --- submit -------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def submit_page(request: HttpRequest, slug: str) -> HttpResponse:
    cluster = _cluster(slug)
    decision = policy.decide(request.user, "cluster.view", cluster)
    if not decision.allowed:
        refusals.record(request.user, cluster, decision, request=request)
        return render(
            request, "jobs/refused.html", {"cluster": cluster, "message": decision.message}, status=403
        )
    choices, preselected, error = _partition_choices(request, cluster)
    context: dict[str, Any] = {"cluster": cluster, "error": error}
    if request.method == "GET":
        initial = {
            "idempotency_key": uuid.uuid4().hex,
            "script_path": request.GET.get("script_path", ""),
            "partition": preselected,
        }
        context["form"] = SubmitForm(initial=initial, partitions=choices)
        return render(request, "jobs/submit.html", context)

    form = SubmitForm(request.POST, partitions=choices)
    context["form"] = form
    if not form.is_valid():
        return render(request, "jobs/submit.html", context, status=400)
    dry_run = request.POST.get("action") != "submit"
    try:
        outcome = submit(
            request.user,
            cluster,
            SubmitRequest.model_validate(form.request_data()),
            dry_run=dry_run,
            idempotency_key="" if dry_run else form.cleaned_data["idempotency_key"],
            request=request,
        )
    except Refusal as e:
        field = present.field_named(e.message)
        if e.status == 400 and field in form.fields and not getattr(e, "plan", None):
            # A field's value is what is wrong (a relative script path): say it under that field.
            form.add_error(field, present.for_people(e.message))
        else:
            context["failure"] = e
            context["failure_message"] = present.for_people(e.message)
        if isinstance(e, SubmitError):
            # It got as far as a decision, maybe a final job: the preview shows what was refused.
            context.update(present.preview_parts(e.plan, e.decision))
        return render(request, "jobs/submit.html", context, status=e.status)
    if dry_run:
        context.update(present.preview_parts(outcome.plan, outcome.decision) | {"previewed": True})
        return render(request, "jobs/submit.html", context)
    record = outcome.record
    words = "was already submitted as" if outcome.replayed else "is queued as"
    what = form.cleaned_data["script_path"] or "The script"
    messages.success(request, f"{what} {words} job {record.slurm_job_id}.")
    for warning in outcome.warnings:
        messages.warning(request, f"Slurm said: {warning}")
    return redirect("jobs:detail", slug=cluster.slug, job_id=record.slurm_job_id)


def _partition_choices(request: HttpRequest, cluster: Cluster) -> tuple[list[tuple[str, str]], str, str]:
    """The partitions the person may use, the one to preselect, and why none are listed (or "").

    Nothing is preselected when Slurm's default partition is theirs (then the script's --partition, or
    that default, decides); else their first one, so a newcomer's first preview is not a refusal.
    """
    try:
        found = partitions.partitions(cluster)
    except (SlurmError, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        return [], "", f"{cluster.name} did not answer, so its partitions are not listed: {e}"
    granted = set(policy.granted_partitions(request.user, cluster, [p.name for p in found]))
    choices = []
    for p in found:
        if p.name not in granted:
            continue
        label = p.name + (" (default)" if p.is_default else "")
        if p.max_time_limit:
            label += f" — at most {p.max_time_limit} min"
        choices.append((p.name, label))
    default_is_theirs = any(p.is_default and p.name in granted for p in found)
    preselected = "" if default_is_theirs or not choices else choices[0][0]
    return choices, preselected, ""


# --- job list -----------------------------------------------------------------------------------


def _list_args(request: HttpRequest) -> tuple[list[str], str | None, int, str]:
    """The list's filters and page from the query; a value not understood is left out and named in `error`."""
    errors = []
    try:
        states = present.states_filter(request.GET.get("state"))
    except present.FilterError as e:
        states = []
        errors.append(str(e))
    try:
        page = present.page_number(request.GET.get("page"))
    except present.FilterError as e:
        page = 1
        errors.append(str(e))
    return states, request.GET.get("partition") or None, page, " ".join(errors)


@login_required
@require_GET
def job_list(request: HttpRequest, slug: str) -> HttpResponse:
    cluster = _cluster(slug)
    decision = policy.decide(request.user, "job.view", cluster)
    if not decision.allowed:
        refusals.record(request.user, cluster, decision, request=request)
        return render(
            request, "jobs/refused.html", {"cluster": cluster, "message": decision.message}, status=403
        )
    states, partition, page, error = _list_args(request)
    result = present.page_of(request.user, cluster, states=states, partition=partition, page=page)
    partition_names = present.partitions_used(request.user, cluster)
    query = {k: v for k, v in (("state", request.GET.get("state", "")), ("partition", partition or "")) if v}
    context = {
        "cluster": cluster,
        "page": result,
        "jobs": [present.for_page(j) for j in result.jobs],
        "error": error,
        "state_filter": request.GET.get("state", ""),
        "partition_filter": partition or "",
        "partition_names": partition_names,
        "state_choices": [
            "active",
            "finished",
            "PENDING",
            "RUNNING",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
        ],
        "query": urlencode(query),
        "data_url": f"{request.path}data?{urlencode({**query, 'page': result.page})}",
        "poll_seconds": LIST_POLL_SECONDS,
        "finished_states": " ".join(sorted(present.FINISHED_JOB_STATES)),
    }
    return render(request, "jobs/job_list.html", context)


def _list_refusal(request: HttpRequest, cluster: Cluster) -> tuple[str, str] | None:
    """The policy's answer for the live list, asked at most once a minute per browser session.

    A page polling every few seconds would otherwise read the person's grants twenty times a
    minute per open tab. A refusal is never remembered, and each is audited.
    """
    key = f"jobs.list.{cluster.pk}"
    now = time.time()
    if request.session.get(key, 0) > now:
        return None
    decision = policy.decide(request.user, "job.view", cluster)
    if not decision.allowed:
        refusals.record(request.user, cluster, decision, request=request)
        request.session.pop(key, None)
        return decision.code, decision.message
    request.session[key] = now + LIST_DECISION_SECONDS
    return None


@login_required
@require_GET
@never_cache
def job_list_data(request: HttpRequest, slug: str) -> JsonResponse:
    """The live list's JSON: {"changed": false} when nothing of yours changed since `since`."""
    cluster = _cluster(slug)
    refusal = _list_refusal(request, cluster)
    if refusal:
        return JsonResponse({"error": {"code": refusal[0], "message": refusal[1]}}, status=403)
    states, partition, page, error = _list_args(request)
    if error:
        return JsonResponse({"error": {"code": "invalid_request", "message": error}}, status=400)
    since = request.GET.get("since")
    now = timezone.now().timestamp()
    if since:
        try:
            unchanged = not present.changed_since(request.user, cluster, float(since))
        except (ValueError, OverflowError, OSError):  # not a number, or not a time a datetime can hold
            unchanged = False
        if unchanged:
            return JsonResponse({"changed": False, "update_time": now})
    result = present.page_of(request.user, cluster, states=states, partition=partition, page=page)
    return JsonResponse({"changed": True, **result.as_dict()})


# --- one job ------------------------------------------------------------------------------------


@login_required
@require_GET
def job_detail(request: HttpRequest, slug: str, job_id: str) -> HttpResponse:
    """A job's page; an array's lists its tasks (each with a page of its own), a task's shows its output."""
    cluster = _cluster(slug)
    try:
        record = control.visible_job(request.user, cluster, job_id, request=request)
    except JobError as e:
        return render(
            request, "jobs/refused.html", {"cluster": cluster, "message": e.message}, status=e.status
        )
    note = control.refresh(request.user, record)
    lines = request.GET.get("lines", "")
    count = min(int(lines), output.MAX_LINES) if lines.isdigit() and int(lines) > 0 else output.DEFAULT_LINES
    if record.is_array:
        stdout = stderr = None
    else:
        stdout = output.tail(record, "stdout", count)
        stderr = stdout if record.stderr_path == record.stdout_path else output.tail(record, "stderr", count)
    cancellable = not record.is_finished and record.person_id == request.user.pk
    context = {
        "cluster": cluster,
        "record": record,
        "job": present.for_page(present.job_dict(record)),
        "note": note,
        "stdout": stdout,
        "stderr": stderr,
        "same_file": record.stderr_path == record.stdout_path,
        "lines": count,
        "cancellable": cancellable,
        "submitted": (record.array_parent.submitted if record.is_array_task else record.submitted) or {},
        "tasks": [present.for_page(t) for t in present.task_rows(record)] if record.is_array else [],
        "array": record.array_parent if record.is_array_task else None,
    }
    return render(request, "jobs/job_detail.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def job_cancel(request: HttpRequest, slug: str, job_id: str) -> HttpResponse:
    """Cancel a job, a whole array (its id) or one task of it (123_4), then back to the page asked from.

    A GET only asks: it says what cancelling will do, and its button POSTs here. Nothing else cancels,
    so a link followed by a prefetcher, a crawler or a second tab changes nothing.
    """
    cluster = _cluster(slug)
    back = request.POST.get("back", "") or request.GET.get("back", "")
    back = back if back in (job_id, job_id.split("_")[0]) else job_id
    if request.method == "GET":
        return _confirm_cancel(request, cluster, job_id, back)
    try:
        record = control.cancel(request.user, cluster, job_id, request=request)
    except Refusal as e:
        if e.status == 404:
            raise Http404(e.message) from None
        messages.error(request, e.message)
        return redirect("jobs:detail", slug=cluster.slug, job_id=back)
    what = "Every task of job array" if record.is_array and "_" not in job_id else "Job"
    messages.success(request, f"{what} {job_id} was cancelled (Slurm now says {record.state}).")
    return redirect("jobs:detail", slug=cluster.slug, job_id=back)


def _confirm_cancel(request: HttpRequest, cluster: Cluster, job_id: str, back: str) -> HttpResponse:
    """The page that asks before a cancel: what stops, what stays, what is charged."""
    try:
        record = control.visible_job(request.user, cluster, job_id, action="job.cancel", request=request)
    except JobError as e:
        return render(
            request, "jobs/refused.html", {"cluster": cluster, "message": e.message}, status=e.status
        )
    if record.is_finished:
        message = f"Job {job_id} already ended ({record.state}); there is nothing to cancel."
        return render(request, "jobs/refused.html", {"cluster": cluster, "message": message}, status=409)
    whole_array = record.is_array and "_" not in job_id
    shown = f" ({record.name})" if record.name else ""
    title = f"Cancel {'job array' if whole_array else 'job'} {job_id}{shown}?"
    context = {
        "cluster": cluster,
        "title": title,
        "consequences": cancel_consequences(record, job_id),
        "action": request.path,
        "confirm_label": f"Cancel {'every task of ' if whole_array else ''}job {job_id}",
        "back": reverse("jobs:detail", kwargs={"slug": cluster.slug, "job_id": back}),
        "hidden": {"back": back},
    }
    return render(request, "ui/confirm.html", context)


def cancel_consequences(record: JobRecord, job_id: str) -> list[str]:
    """What cancelling `record` does, in the order it happens, for the confirmation page."""
    if record.is_array and "_" not in job_id:
        counts = (record.array_summary or {}).get("counts") or {}
        summary = present.tasks_words({str(k): int(v) for k, v in counts.items()})
        return [
            "Every task of the array that has not ended stops now"
            + (f" (now: {summary})." if summary else "."),
            "Tasks that already ended keep their output; each running task's output so far stays.",
            "Your budget is charged only for the time each task ran; the rest of the array's reservation "
            "is released.",
            "A cancelled job cannot be resumed: submit it again to run it again.",
        ]
    lines = []
    if record.is_array_task:
        lines.append(f"Only task {job_id} stops; the array's other tasks go on.")
    if record.start_time is None:
        lines += [
            "It has not started: it leaves the queue and never runs.",
            "Nothing is charged; its reservation is released.",
        ]
    else:
        where = f" ({record.stdout_path})" if record.stdout_path else ""
        lines += [
            f"It stops now: Slurm ends its processes on {record.node_list or 'its nodes'}.",
            f"Its output so far stays{where}.",
            "Your budget is charged for the time it ran and no more; the rest of its reservation is "
            "released.",
        ]
    lines.append("A cancelled job cannot be resumed: submit it again to run it again.")
    return lines
