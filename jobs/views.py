"""The pages of everyday work: the dashboard, the submit form, the live job list, a job, API tokens."""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from access import policy
from access.models import Usage
from access.quota import quota_status
from accounts import api_tokens
from accounts.models import ApiToken
from clusters import tokens
from clusters.models import Cluster
from clusters.slurm import SlurmError
from jobs import control, output, partitions, present
from jobs.control import JobError
from jobs.forms import SubmitForm, TokenForm
from jobs.submit import SubmitError, submit

log = logging.getLogger("clusterra.jobs")

LIST_POLL_SECONDS = 3
LIST_DECISION_SECONDS = 60
CHART_HEIGHT = 90


def _cluster(slug: str) -> Cluster:
    return get_object_or_404(Cluster, slug=slug)


# --- dashboard ----------------------------------------------------------------------------------


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    usable, refused = [], []
    for cluster in Cluster.objects.filter(enabled=True).order_by("name"):
        decision = policy.decide(request.user, "cluster.view", cluster, http_request=request)
        if decision.allowed:
            usable.append(_cluster_panel(request, cluster))
        else:
            refused.append({"cluster": cluster, "message": decision.message})
    return render(request, "jobs/dashboard.html", {"usable": usable, "refused": refused})


def _cluster_panel(request: HttpRequest, cluster: Cluster) -> dict[str, Any]:
    panel: dict[str, Any] = {"cluster": cluster, "error": "", "partitions": []}
    try:
        known = [p.name for p in partitions.partitions(cluster)]
        granted = policy.granted_partitions(request.user, cluster, known)
        panel["partitions"] = partitions.views(cluster, granted)
        panel["nodes"] = partitions.nodes(cluster)
    except (SlurmError, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        panel["error"] = str(e)
    quotas = quota_status(request.user, cluster)
    panel["quotas"] = [_gauges(q) for q in quotas]
    start = quotas[0].period_start if quotas else timezone.now() - timedelta(days=30)
    panel["chart"] = _use_chart(request.user, cluster, start)
    panel["active_jobs"] = (
        present.jobs_of(request.user, cluster).exclude(state__in=present.FINISHED_JOB_STATES).count()
    )
    return panel


def _percent(part: float, whole: float | None) -> int:
    if not whole:
        return 0
    return max(0, min(100, round(100 * part / whole)))


def _gauges(q: Any) -> dict[str, Any]:
    """A quota as bars: used and reserved against each limit that is set."""
    gauges = []
    for kind in ("gpu", "cpu"):
        limit = getattr(q, f"{kind}_hours_limit")
        if limit is None:
            continue
        used, reserved = getattr(q, f"{kind}_hours_used"), getattr(q, f"{kind}_hours_reserved")
        gauges.append(
            {
                "label": f"{kind.upper()}-hours",
                "used": round(used, 1),
                "reserved": round(reserved, 1),
                "left": round(getattr(q, f"{kind}_hours_left") or 0, 1),
                "limit": limit,
                "used_pct": _percent(used, limit),
                "reserved_pct": min(100 - _percent(used, limit), _percent(reserved, limit)),
            }
        )
    for label, now, limit in (
        ("Running jobs", q.running_jobs, q.max_running_jobs),
        ("Queued jobs", q.queued_jobs, q.max_queued_jobs),
    ):
        if limit is not None:
            gauges.append(
                {
                    "label": label,
                    "used": now,
                    "reserved": 0,
                    "left": max(0, limit - now),
                    "limit": limit,
                    "used_pct": _percent(now, limit),
                    "reserved_pct": 0,
                }
            )
    limits = [
        (label, value)
        for label, value in (
            ("nodes per job", q.max_nodes_per_job),
            ("CPUs per job", q.max_cpus_per_job),
            ("GPUs per job", q.max_gpus_per_job),
            ("minutes per job", q.max_walltime),
        )
        if value is not None
    ]
    return {"status": q, "gauges": gauges, "limits": limits}


def _use_chart(person: Any, cluster: Cluster, start) -> dict[str, Any]:
    """Your settled GPU- and CPU-hours per day since `start`, as bar heights for a plain SVG."""
    rows = (
        Usage.objects.filter(cluster=cluster, user=person, state=Usage.State.SETTLED, ended_at__gte=start)
        .annotate(day=TruncDate("ended_at"))
        .values("day")
        .annotate(gpu=Sum("used_gpu_hours"), cpu=Sum("used_cpu_hours"))
        .order_by("day")
    )
    by_day: dict[Any, dict[str, float]] = defaultdict(lambda: {"gpu": 0.0, "cpu": 0.0})
    for row in rows:
        by_day[row["day"]] = {"gpu": row["gpu"] or 0.0, "cpu": row["cpu"] or 0.0}
    first = timezone.localtime(start).date()
    today = timezone.localdate()
    days = [first + timedelta(days=i) for i in range((today - first).days + 1)][-62:]
    peak = max([max(v["gpu"], v["cpu"]) for v in by_day.values()] + [0.0])
    width = 8
    bars = []
    for i, day in enumerate(days):
        values = by_day.get(day, {"gpu": 0.0, "cpu": 0.0})
        cpu_h = round(80 * values["cpu"] / peak, 1) if peak else 0
        gpu_h = round(80 * values["gpu"] / peak, 1) if peak else 0
        x = i * (2 * width + 4)
        bars.append(
            {
                "day": day,
                "x": x,
                "gpu_x": x + width,
                "cpu": round(values["cpu"], 2),
                "gpu": round(values["gpu"], 2),
                "cpu_h": cpu_h,
                "gpu_h": gpu_h,
                "cpu_y": round(CHART_HEIGHT - cpu_h, 1),
                "gpu_y": round(CHART_HEIGHT - gpu_h, 1),
            }
        )
    total_gpu = f"{sum(b['gpu'] for b in bars):.2f}"
    total_cpu = f"{sum(b['cpu'] for b in bars):.2f}"
    return {
        "bars": bars,
        "width": width,
        "svg_width": max(1, len(bars) * (2 * width + 4)),
        "peak": round(peak, 2),
        "since": first,
        "total_gpu": total_gpu,
        "total_cpu": total_cpu,
    }


# --- submit -------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def submit_page(request: HttpRequest, slug: str) -> HttpResponse:
    cluster = _cluster(slug)
    decision = policy.decide(request.user, "cluster.view", cluster, http_request=request)
    if not decision.allowed:
        return render(
            request, "jobs/refused.html", {"cluster": cluster, "message": decision.message}, status=403
        )
    choices, error = _partition_choices(request, cluster)
    context: dict[str, Any] = {"cluster": cluster, "error": error}
    if request.method == "GET":
        initial = {"idempotency_key": uuid.uuid4().hex, "script_path": request.GET.get("script_path", "")}
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
            form.request_data(),
            dry_run=dry_run,
            idempotency_key="" if dry_run else form.cleaned_data["idempotency_key"],
            request=request,
        )
    except SubmitError as e:
        context.update({"failure": e, "plan": e.plan, "decision": e.decision})
        return render(request, "jobs/submit.html", context, status=e.status)
    if dry_run:
        context.update({"plan": outcome.plan, "decision": outcome.decision, "previewed": True})
        return render(request, "jobs/submit.html", context)
    record = outcome.record
    words = "was already submitted as" if outcome.replayed else "is queued as"
    messages.success(request, f"{form.cleaned_data['script_path']} {words} job {record.slurm_job_id}.")
    for warning in outcome.warnings:
        messages.warning(request, f"Slurm said: {warning}")
    return redirect("jobs:detail", slug=cluster.slug, job_id=record.slurm_job_id)


def _partition_choices(request: HttpRequest, cluster: Cluster) -> tuple[list[tuple[str, str]], str]:
    try:
        found = partitions.partitions(cluster)
    except (SlurmError, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        return [], f"{cluster.name} did not answer, so its partitions are not listed: {e}"
    granted = set(policy.granted_partitions(request.user, cluster, [p.name for p in found]))
    choices = []
    for p in found:
        if p.name not in granted:
            continue
        label = p.name + (" (default)" if p.is_default else "")
        if p.max_time_limit:
            label += f" — at most {p.max_time_limit} min"
        choices.append((p.name, label))
    return choices, ""


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
    decision = policy.decide(request.user, "job.view", cluster, http_request=request)
    if not decision.allowed:
        return render(
            request, "jobs/refused.html", {"cluster": cluster, "message": decision.message}, status=403
        )
    states, partition, page, error = _list_args(request)
    result = present.page_of(request.user, cluster, states=states, partition=partition, page=page)
    # order_by() first: JobRecord's default ordering would otherwise join the DISTINCT (partition, created,
    # id), which is every row, not every partition.
    partition_names = sorted(
        set(present.jobs_of(request.user, cluster).values_list("partition", flat=True).order_by().distinct())
        - {""}
    )
    query = {k: v for k, v in (("state", request.GET.get("state", "")), ("partition", partition or "")) if v}
    context = {
        "cluster": cluster,
        "page": result,
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
    }
    return render(request, "jobs/job_list.html", context)


def _list_refusal(request: HttpRequest, cluster: Cluster) -> tuple[str, str] | None:
    """The policy's answer for the live list, asked at most once a minute per browser session.

    Every decision is audited; a page polling every few seconds would otherwise write
    twenty audit events a minute per open tab. A refusal is never remembered.
    """
    key = f"jobs.list.{cluster.pk}"
    now = time.time()
    if request.session.get(key, 0) > now:
        return None
    decision = policy.decide(request.user, "job.view", cluster, http_request=request)
    if not decision.allowed:
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
def job_detail(request: HttpRequest, slug: str, job_id: int) -> HttpResponse:
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
    stdout = output.tail(record, "stdout", count)
    stderr = stdout if record.stderr_path == record.stdout_path else output.tail(record, "stderr", count)
    cancellable = not record.is_finished and record.person_id == request.user.pk
    context = {
        "cluster": cluster,
        "record": record,
        "job": present.job_dict(record),
        "note": note,
        "stdout": stdout,
        "stderr": stderr,
        "same_file": record.stderr_path == record.stdout_path,
        "lines": count,
        "cancellable": cancellable,
        "submitted": record.submitted or {},
    }
    return render(request, "jobs/job_detail.html", context)


@login_required
@require_POST
def job_cancel(request: HttpRequest, slug: str, job_id: int) -> HttpResponse:
    cluster = _cluster(slug)
    try:
        record = control.cancel(request.user, cluster, job_id, request=request)
    except JobError as e:
        if e.status == 404:
            raise Http404(e.message) from None
        messages.error(request, e.message)
        return redirect("jobs:detail", slug=cluster.slug, job_id=job_id)
    messages.success(request, f"Job {job_id} was cancelled (Slurm now says {record.state}).")
    return redirect("jobs:detail", slug=cluster.slug, job_id=job_id)


# --- API tokens ---------------------------------------------------------------------------------


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST or None, initial={"days": api_tokens.default_days()})
    new_token = ""
    status = 200
    if request.method == "POST":
        if form.is_valid():
            _, new_token = api_tokens.issue(
                request.user, name=form.cleaned_data["name"], days=form.cleaned_data["days"], by=request.user
            )
            form = TokenForm(initial={"days": api_tokens.default_days()})
        else:
            status = 400
    rows = ApiToken.objects.filter(user=request.user).order_by("-created")
    response = render(
        request,
        "jobs/tokens.html",
        {"form": form, "new_token": new_token, "tokens": rows, "now": timezone.now()},
        status=status,
    )
    # The new token is on this page once: it must not be kept by a browser or proxy cache.
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    if api_tokens.revoke(token, by=request.user, reason="revoked by its owner"):
        messages.success(request, f"API token {token.prefix}… ({token.name}) is revoked.")
    return redirect("jobs:tokens")


def _cli_callback(value: str) -> str:
    """Only a loopback http address: the token goes to the CLI on this computer and nowhere else."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return ""
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1") or not port:
        return ""
    return value


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def token_for_cli(request: HttpRequest) -> HttpResponse:
    """`clusterra login` opens this page; on approval a new token is posted to the CLI's loopback address."""
    source = request.POST if request.method == "POST" else request.GET
    callback = _cli_callback(source.get("callback", ""))
    state = source.get("state", "")
    host = source.get("host", "")[:60]
    if not callback or not state or len(state) > 128 or not state.replace("-", "").replace("_", "").isalnum():
        return render(request, "jobs/cli_login.html", {"invalid": True}, status=400)
    context = {"callback": callback, "state": state, "host": host}
    if request.method == "POST":
        name = f"clusterra CLI on {host}" if host else "clusterra CLI"
        _, raw = api_tokens.issue(request.user, name=name, by=request.user)
        context["token"] = raw
        context["console_url"] = request.build_absolute_uri("/").rstrip("/")
    response = render(request, "jobs/cli_login.html", context)
    response["Cache-Control"] = "no-store"
    return response
