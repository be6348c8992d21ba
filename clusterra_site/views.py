"""Site-wide pages: the health check (the home page is the jobs dashboard)."""

from __future__ import annotations

from django.db import connection
from django.db.utils import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from clusters import probe
from clusters.models import Cluster


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the console can serve; each cluster's slurmrestd is reported, not required.

    A cluster being down is not the console being down (its jobs keep running and
    the other clusters work), so only the database decides the status code.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = {"ok": True, "vendor": connection.vendor}
    except DatabaseError as e:
        return JsonResponse({"ok": False, "database": {"ok": False, "error": str(e)}}, status=503)
    clusters = {}
    for cluster in Cluster.objects.filter(enabled=True):
        result = probe.check(cluster, detail=False)
        clusters[cluster.slug] = {"ok": result.ok, "detail": result.summary, "millis": result.millis}
    return JsonResponse({"ok": True, "database": database, "clusters": clusters})
