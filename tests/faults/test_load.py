"""Load: many signed-in people at once against the real console under uvicorn, on the real Slurm.

Each of CLIENTS clients is a person of their own, with a session cookie for the pages and an API token
for /v1, and sends a mix of everyday requests (dashboard, job list and its live feed, a job, /v1/me, the
/v1 job list and a job, the health check, dry-run submits) until REQUESTS are answered or SECONDS pass.
Every answer must have its expected status and show that person's own data (no 5xx, no one else's
jobs); throughput and latency are printed.

Nothing is relaxed for the load: people sign in by session, as after a real sign-in, so the sign-in
throttle (it counts failed passwords only) is never touched, and each person's token stays well under
/v1's rate limit (CLUSTERRA_API_RATE, per token). The people are many and distinct, as on a real
console, rather than one person from 48 windows.
"""

from __future__ import annotations

import pytest

from tests.support import live_server, load
from tests.support.load import CLIENTS, REAL_PEOPLE, REQUESTS, SECONDS, visitors

pytestmark = [pytest.mark.slurm, pytest.mark.root]


@pytest.mark.django_db(transaction=True)
def test_many_people_at_once_get_their_own_answers_with_no_errors(demo_cluster, people, django_db_blocker):
    crowd = visitors(demo_cluster, people)
    with live_server.forked(django_db_blocker) as base:
        load.warm_up(base, crowd[0])
        cpu_before = live_server.cpu_seconds(base.pid)
        held = load.run(base, crowd)
        server_cpu = live_server.cpu_seconds(base.pid) - cpu_before
    tally = held.tally
    print(
        f"\nload held: {held.done:,} requests from {CLIENTS} clients ({CLIENTS} people, {REAL_PEOPLE} with a "
        f"Linux user) in {held.seconds:.1f} s, {held.per_second:.0f} req/s, p50 {held.p50:.0f} ms, "
        f"p99 {held.p99:.0f} ms, max {held.slowest:.0f} ms, errors {len(tally.errors)}"
        f" ({'every request sent' if held.done >= REQUESTS else f'stopped by the {SECONDS:g} s bound'}); "
        f"server CPU {server_cpu / held.done * 1000:.1f} ms/request, {held.done / server_cpu:.0f} requests "
        f"per CPU-second of the server (the clients' threads share its cores)"
    )
    for route, count in tally.routes.most_common():
        times = sorted(tally.by_route[route])
        p50, p99 = times[len(times) // 2], times[len(times) * 99 // 100]
        print(f"  {route}: {count}, p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    load.check(held)
