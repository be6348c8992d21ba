"""Site-wide pages: the health check (the home page is the jobs dashboard)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.db.utils import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from clusters import probe
from clusters.models import Cluster
from jobs import sync
from jobs.models import SyncLoop
from terminal.notices import CHECK_SECONDS

log = logging.getLogger(__name__)
# How long the channel layer (Redis) gets to answer one round trip; a health check must not hang.
LAYER_TIMEOUT = 2.0
# How long staff's call waits for the clusters' pings, asked all at once: a hung slurmrestd is said to be
# one instead of holding the answer for its read timeout (30 s by default), let alone one per cluster.
PROBE_SECONDS = 3.0


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the console can serve, and what is degraded; staff also see each part's details.

    A cluster being down is not the console being down (its jobs keep running and
    the other clusters work), so only the database decides the status code.
    The channel layer (Redis) does not decide it either: pages, the API and job
    submission never use it, and terminals keep working without it (offboarding
    reaches them through a database check instead of a notice). A 503 would make a
    load balancer take every worker out at once and turn that degraded console into
    a dead one; "degraded" names what an operator should look at instead.

    Anyone but staff (a load balancer, a stranger) learns only that: cluster names, Slurm versions and
    backends are staff's. Their call costs slurmrestd nothing, as no cluster is part of that answer;
    staff's calls reuse each cluster's probe for a few seconds (probe.recent).

    A sync loop that stopped ending rounds is "degraded" (job states and the ledger stand still); staff
    also see each cluster's last round time and how long ago the loop's last round ended (jobs.sync).
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        # Read before anything else of ours: a database without the console's tables (a server started
        # before `manage.py migrate`) answers SELECT 1 but can serve nothing.
        loop = SyncLoop.objects.filter(pk=1).first()
        database = {"ok": True, "vendor": connection.vendor}
    except DatabaseError as e:
        # Without the database nobody can be told apart from a stranger: the error goes to the log only.
        log.error("healthz: the database does not answer, or lacks the console's tables (migrate): %s", e)
        return JsonResponse({"ok": False, "degraded": ["database"]}, status=503)
    layer = channel_layer_state()
    degraded = [] if layer["ok"] else ["channel_layer"]
    if sync.stalled(loop):
        degraded.append("sync")
    if not request.user.is_staff:
        return JsonResponse({"ok": True, "degraded": degraded})
    clusters = cluster_states(list(Cluster.objects.filter(enabled=True)))
    return JsonResponse(
        {
            "ok": True,
            "degraded": degraded,
            "database": database,
            "channel_layer": layer,
            "clusters": clusters,
            "sync": sync.round_times(),
        }
    )


class _Ping:
    """One cluster's probe.recent on a thread of its own; a later call finds it while it is under way."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.asked = time.monotonic()
        self.done = threading.Event()
        self.result: probe.Probe | None = None

    def run(self) -> None:
        try:
            self.result = probe.recent(self.cluster)
        except Exception as e:  # probe.check catches Slurm's errors; anything else is still an answer
            self.result = probe.Probe(self.cluster, False, f"{type(e).__name__}: {e}")
        finally:
            self.done.set()


# Cluster pk → its ping: at most one per cluster and process, so a hung slurmrestd polled by a dashboard
# does not pile up a thread per call.
_pings: dict[int, _Ping] = {}
_pings_lock = threading.Lock()


def cluster_states(clusters: list[Cluster]) -> dict[str, dict[str, Any]]:
    """Each cluster's recent probe, all asked at once and waited for up to PROBE_SECONDS together."""
    pings = {}
    for cluster in clusters:
        with _pings_lock:
            ping = _pings.get(cluster.pk)
            if ping is None or ping.done.is_set():
                ping = _pings[cluster.pk] = _Ping(cluster)
                threading.Thread(target=ping.run, name=f"healthz {cluster.slug}", daemon=True).start()
        pings[cluster.slug] = ping
    end = time.monotonic() + PROBE_SECONDS
    states = {}
    for slug, ping in pings.items():
        if ping.done.wait(max(0.0, end - time.monotonic())) and ping.result is not None:
            result = ping.result
            states[slug] = {"ok": result.ok, "detail": result.summary, "millis": result.millis}
            continue
        waited = time.monotonic() - ping.asked
        url = ping.cluster.slurmrestd_url
        states[slug] = {
            "ok": False,
            "detail": f"slurmrestd at {url} has not answered a ping for {waited:.0f} s.",
            "millis": None,
        }
    return states


def channel_layer_state() -> dict[str, Any]:
    """Whether the channel layer answers a real round trip (a group join and leave), within a bound."""
    layer = get_channel_layer()
    if layer is None:
        return {
            "ok": False,
            "backend": "none",
            "detail": "No channel layer is configured: terminals are not told at once when their person is "
            "offboarded.",
        }
    backend = "redis" if type(layer).__module__.startswith("channels_redis") else "in-memory"
    started = time.monotonic()
    try:
        async_to_sync(_round_trip)(layer)
    except Exception as e:
        problem = f"no answer within {LAYER_TIMEOUT:g} s" if isinstance(e, TimeoutError) else str(e)
        return {
            "ok": False,
            "backend": backend,
            "detail": f"The channel layer ({backend}) cannot be reached: {problem}. Pages, the API and job "
            "submission are not affected; terminals open and keep running, and offboarding closes them "
            f"through a database check every {CHECK_SECONDS:g} s instead of at once.",
        }
    return {"ok": True, "backend": backend, "millis": round((time.monotonic() - started) * 1000, 1)}


async def _round_trip(layer: Any) -> None:
    async with asyncio.timeout(LAYER_TIMEOUT):
        channel = await layer.new_channel()
        await layer.group_add("healthz", channel)
        await layer.group_discard("healthz", channel)
