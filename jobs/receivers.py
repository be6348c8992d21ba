"""What the jobs app tells other apps when they ask: the queued and running jobs offboarding will end."""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from django.dispatch import receiver

from accounts import offboarding
from jobs.models import JobRecord


@receiver(offboarding.foreseen, dispatch_uid="jobs.unfinished_jobs")
def unfinished_jobs(sender: Any, user: Any, **kwargs: Any) -> dict[str, dict[int, int]]:
    """The person's unfinished jobs per cluster, as the sync loop last saw them (an array counts once)."""
    rows = (
        JobRecord.objects.active()
        .filter(person=user, array_parent__isnull=True)
        .values("cluster_id")
        .annotate(count=Count("id"))
        .order_by()
    )
    return {"unfinished_jobs": {row["cluster_id"]: row["count"] for row in rows}}
