"""A person's quotas and use on one cluster as the dashboard draws them: gauges, and a chart per day."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from access.models import Usage
from access.quota import QuotaStatus, quota_status
from clusters.models import Cluster

CHART_HEIGHT = 90


def quota_panel(person: Any, cluster: Cluster) -> dict[str, Any]:
    """The gauges of every quota that applies, and the use chart since the current period began."""
    quotas = quota_status(person, cluster)
    start = quotas[0].period_start if quotas else timezone.now() - timedelta(days=30)
    return {"quotas": [gauges(q) for q in quotas], "chart": use_chart(person, cluster, start)}


def _percent(part: float, whole: float | None) -> int:
    if not whole:
        return 0
    return max(0, min(100, round(100 * part / whole)))


def gauges(q: QuotaStatus) -> dict[str, Any]:
    """A quota as bars: used and reserved against each limit that is set."""
    bars = []
    for kind in ("gpu", "cpu"):
        limit = getattr(q, f"{kind}_hours_limit")
        if limit is None:
            continue
        used, reserved = getattr(q, f"{kind}_hours_used"), getattr(q, f"{kind}_hours_reserved")
        bars.append(
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
            bars.append(
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
    return {"status": q, "gauges": bars, "limits": limits}


def use_chart(person: Any, cluster: Cluster, start: datetime) -> dict[str, Any]:
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
