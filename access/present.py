"""A person's quotas and use on one cluster in words, and what a preview costs, as the pages say them."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.html import format_html_join

from access.held import held
from access.models import Usage
from access.policy import Decision, Resources, quota_status
from access.quota import QuotaStatus
from clusters.models import Cluster
from ui.templatetags.ui import figure

CHART_HEIGHT = 90
# How access.policy joins an allowed verdict and the hours it asks for ("…may run on X; it asks for …").
_ASKS = "; it asks for "


def quota_panel(person: Any, cluster: Cluster) -> dict[str, Any]:
    """Every quota that applies, in words with what is left, and the use chart since the period began."""
    quotas = quota_status(person, cluster)
    start = quotas[0].period_start if quotas else timezone.now() - timedelta(days=30)
    return {"quotas": [quota_words(q) for q in quotas], "chart": use_chart(person, cluster, start)}


def _percent(part: float, whole: float | None) -> int:
    if not whole:
        return 0
    return max(0, min(100, round(100 * part / whole)))


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def quota_words(q: QuotaStatus) -> dict[str, Any]:
    """One quota as sentences a person reads at a glance: "12.3 of 100 CPU-hours left this month".

    Each line also carries its bar: the share used, and the share reserved by queued and running jobs.
    """
    whose = "Your own quota" if q.scope == "you" else f"The quota of {q.scope}, shared by its members"
    lines = []
    for kind in ("gpu", "cpu"):
        limit = getattr(q, f"{kind}_hours_limit")
        if limit is None:
            continue
        used, reserved = getattr(q, f"{kind}_hours_used"), getattr(q, f"{kind}_hours_reserved")
        left = getattr(q, f"{kind}_hours_left") or 0.0
        unit = f"{kind.upper()}-hours"
        detail = f"{figure(used)} used"
        if reserved:
            detail += f", {figure(reserved)} reserved by queued and running jobs"
        lines.append(
            {
                "label": unit,
                "words": f"{figure(left)} of {figure(limit)} {unit} left {q.period_words}",
                "detail": detail,
                "used_pct": _percent(used, limit),
                "reserved_pct": min(100 - _percent(used, limit), _percent(reserved, limit)),
            }
        )
    for label, now, limit, verb in (
        ("Running jobs", q.running_jobs, q.max_running_jobs, "running"),
        ("Queued jobs", q.queued_jobs, q.max_queued_jobs, "queued"),
    ):
        if limit is not None:
            lines.append(
                {
                    "label": label,
                    "words": f"{now} of {limit} {_plural(limit, 'job', 'jobs')} {verb}",
                    "detail": "",
                    "used_pct": _percent(now, limit),
                    "reserved_pct": 0,
                }
            )
    limits = [
        f"{value} {_plural(value, one, many)}"
        for value, one, many in (
            (q.max_nodes_per_job, "node", "nodes"),
            (q.max_cpus_per_job, "CPU", "CPUs"),
            (q.max_gpus_per_job, "GPU", "GPUs"),
            (q.max_memory_per_job, "MB of memory", "MB of memory"),
            (q.max_walltime, "minute", "minutes"),
        )
        if value is not None
    ]
    return {
        "status": q,
        "title": f"{whose}, per {q.period}",
        "lines": lines,
        "per_job": f"Each job may use at most {', '.join(limits)}." if limits else "",
    }


# One day's pair of bars: its title, then the CPU-hours and the GPU-hours bars (x, y, width, height each).
_BAR = (
    "<g><title>{}: {} CPU-hours, {} GPU-hours</title>\n"
    '<rect class="cpu" x="{}" y="{}" width="{}" height="{}"></rect>\n'
    '<rect class="gpu" x="{}" y="{}" width="{}" height="{}"></rect></g>'
)


# The chart is a month of settled use summed per day and drawn as ~60 bars: a fifth of the dashboard's CPU,
# for a picture that changes only when one of the person's jobs settles. Each process keeps what it drew
# for CHART_SECONDS and draws again at once after it wrote to the cluster's ledger itself; a job settled
# by the sync loop (another process) shows within CHART_SECONDS.
CHART_SECONDS = 30.0
_CHARTS_KEPT = 2048
_charts: OrderedDict[tuple[Any, ...], tuple[float, dict[str, Any]]] = OrderedDict()
_charts_lock = threading.Lock()


def use_chart(person: Any, cluster: Cluster, start: datetime) -> dict[str, Any]:
    """Your settled GPU- and CPU-hours per day since `start`, as bar heights for a plain SVG."""
    key = (
        person.pk,
        cluster.pk,
        start.replace(second=0, microsecond=0),
        timezone.localdate(),
        timezone.get_current_timezone_name(),
        held.use_generation(cluster.pk),
    )
    now = time.monotonic()
    with _charts_lock:
        kept = _charts.get(key)
        if kept is not None and now - kept[0] < CHART_SECONDS:
            return kept[1]
    chart = _draw_chart(person, cluster, start)
    with _charts_lock:
        _charts[key] = (now, chart)
        _charts.move_to_end(key)
        while len(_charts) > _CHARTS_KEPT:
            _charts.popitem(last=False)
    return chart


def _draw_chart(person: Any, cluster: Cluster, start: datetime) -> dict[str, Any]:
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
        title = (day.isoformat(), figure(values["cpu"]), figure(values["gpu"]))
        cpu_bar = (x, round(CHART_HEIGHT - cpu_h, 1), width, cpu_h)
        gpu_bar = (x + width, round(CHART_HEIGHT - gpu_h, 1), width, gpu_h)
        bars.append((*title, *cpu_bar, *gpu_bar))
    return {
        # Drawn here with format_html_join rather than in the template: a month of bars was ~280 template
        # variables, each resolved, localised and escaped, half of the dashboard's CPU.
        "bars": format_html_join("\n", _BAR, bars),
        "svg_width": max(1, len(bars) * (2 * width + 4)),
        "peak": figure(peak),
        "since": first,
        "total_gpu": figure(sum(by_day[d]["gpu"] for d in days if d in by_day)),
        "total_cpu": figure(sum(by_day[d]["cpu"] for d in days if d in by_day)),
    }


def preview_words(decision: Decision | None, resources: Resources | None) -> dict[str, str]:
    """What a submit preview says: the policy's verdict, and the job's cost said once.

    The cost is the reservation submitting makes (the exact hours access.ledger reserves), in the one
    way pages write a figure. The policy's allowed sentence also names the hours, rounded up to a tenth
    for its own reasons (the API and the CLI print it whole), so the page keeps only its verdict. A
    refused job reserves nothing: its sentence is all there is to say (a budget refusal names the hours).
    """
    verdict = ""
    if decision is not None:
        verdict = decision.message
        if decision.allowed and _ASKS in verdict:
            verdict = verdict.split(_ASKS, 1)[0] + "."
    refused = decision is not None and not decision.allowed
    cost = "" if resources is None or refused else reservation_words(resources, decision)
    return {"verdict": verdict, "cost": cost}


def reservation_words(resources: Resources, decision: Decision | None = None) -> str:
    """ "Submitting reserves 0.0333 CPU-hours …": what access.ledger.reserve would hold for this job."""
    asked = [(resources.gpu_hours, "GPU"), (resources.cpu_hours, "CPU")]
    said = [f"{figure(hours)} {kind}-hours" for hours, kind in asked if hours > 0]
    whose = "all its tasks together, " if resources.is_array else ""
    if not said:
        return "Submitting reserves no GPU- or CPU-hours."
    sentence = (
        f"Submitting reserves {' and '.join(said)} ({whose}for its whole time limit); when it ends, what "
        "it really used replaces the reservation."
    )
    left = _tightest_left(resources, decision)
    return f"{sentence} {left}" if left else sentence


def _tightest_left(resources: Resources, decision: Decision | None) -> str:
    """What is left of the budget the job draws on most tightly, from the allowed decision's numbers."""
    if decision is None or not decision.allowed:
        return ""
    quotas = decision.facts.get("quotas") or []
    for kind, asked in (("gpu", resources.gpu_hours), ("cpu", resources.cpu_hours)):
        budgets = [q for q in quotas if q.get(f"{kind}_hours_left") is not None]
        if asked > 0 and budgets:
            tightest = min(budgets, key=lambda q: q[f"{kind}_hours_left"])
            holder = "You have" if tightest["scope"] == "you" else f"{tightest['scope'].capitalize()} has"
            return f"{holder} {figure(tightest[f'{kind}_hours_left'])} {kind.upper()}-hours left."
    return ""
