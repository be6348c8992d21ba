"""The sync loop: every cluster's round at once (jobs.sync_cluster does one), within a deadline each.

Decisions:

- **Clusters at once** (`sync_once`): everything of a round that talks to one cluster is that
  cluster's task, on a thread of its own; the round waits for each up to
  CLUSTERRA_SYNC_CLUSTER_SECONDS, and one still busy goes on in the background and is skipped
  until it ends. What spans clusters (stale claims, IdP checks) comes after. Each cluster's
  round time is kept in SyncRound, the loop's heartbeat in SyncLoop: /healthz shows them to staff.
- **One instance** (jobs.sync_lock): a second loop waits as a standby, asking for the lock every
  STANDBY_RETRY_SECONDS, so it takes over within seconds of the active loop's death; web workers
  never take the lock.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from accounts import idp_check
from clusters.models import Cluster
from clusters.slurm.http import close_sessions
from jobs import claims
from jobs.models import SyncLoop, SyncRound
from jobs.sync_cluster import sync_cluster
from jobs.sync_lock import SingleInstance, holder_name
from jobs.tracking import Report

log = logging.getLogger("clusterra.jobs.sync")


# --- one round ----------------------------------------------------------------------------------


@dataclass
class ClusterTask:
    """One cluster's part of a round, on a thread of its own; `doing` says where it is, for a late note."""

    cluster: Cluster
    started: datetime
    clock: float = field(default_factory=time.monotonic)
    report: Report = field(default_factory=Report)
    doing: str = "starting"
    done: threading.Event = field(default_factory=threading.Event)


# The clusters whose task is under way in this process, by cluster pk. A cluster here is skipped by the
# next rounds: its task must never run twice at once. The ledger's steps would still be made once each
# (jobs.tracking moves each by compare-and-set), but two tasks reading the same queue could both adopt a
# job from a shell (two records, its use recorded twice) or both confirm and give up the same claim.
_tasks: dict[int, ClusterTask] = {}
_tasks_lock = threading.Lock()
_pool_warned = False


def sync_once(*, interval: float | None = None) -> Report:
    """One round: every cluster at once, each within CLUSTERRA_SYNC_CLUSTER_SECONDS, then what spans them.

    Each cluster's part runs on a thread of its own with its own database connection, so a slow or
    dead slurmrestd (or head node) delays no other cluster: the round waits for it up to the deadline,
    says so, and leaves it going in the background; the next rounds skip that cluster until it ends.
    A thread per cluster task rather than a fixed pool: a hung cluster would hold a pool's worker for
    minutes and leave the others waiting for one; at most one task per cluster bounds the threads.

    SQLite too runs the clusters at once. Its writers take turns: every transaction begins IMMEDIATE
    and waits up to 20 s for the lock (clusterra_site.env), and a round's writes are short. Measured on
    the real Slurm: 7 clusters at once for 3 people (tests/jobs/test_sync_clusters.py), and 13 for 6
    people, adopted and charged every job with no "database is locked" (longest round 1.9 s). Serialising
    the clusters instead would let one hung cluster stop the others on the newcomer's set-up, which is
    the one thing this round must not do.

    Inside a caller's transaction (a test's atomic block, a shell's) the clusters run one after the
    other on the caller's connection, without a deadline: other connections could not see what the
    caller has not committed, and on SQLite could not write while it holds the lock.

    `interval` (the loop's, for /healthz to judge a stalled loop) is only recorded.
    """
    report = Report()
    started = timezone.now()
    clock = time.monotonic()
    clusters = list(Cluster.objects.filter(Q(enabled=True) | Q(enforce_policy=True)).order_by("slug"))
    if connection.in_atomic_block:
        for cluster in clusters:
            task = ClusterTask(cluster, started)
            _run(task, threaded=False)
            _merge(report, task.report)
    else:
        _poll_concurrently(clusters, started, report)
    # After the queues: a claim whose owner's queue was read has been matched by its tag or given up.
    claims.release_stale_claims(report)
    # IdPs that push nothing: are the people signed in through them still accepted there?
    checked = idp_check.check_due()
    report.offboarded += checked.offboarded
    _note_loop(started, time.monotonic() - clock, interval)
    return report


def _poll_concurrently(clusters: list[Cluster], started: datetime, report: Report) -> None:
    deadline = float(settings.CLUSTERRA_SYNC_CLUSTER_SECONDS)
    _warn_if_the_pool_is_small(len(clusters))
    launched: list[ClusterTask] = []
    for cluster in clusters:
        with _tasks_lock:
            busy = _tasks.get(cluster.pk)
            if busy is None:
                task = _tasks[cluster.pk] = ClusterTask(cluster, started)
        if busy is not None:
            report.errors.append(
                f"{cluster.slug}/sync: skipped: its round that started {time.monotonic() - busy.clock:.0f} s "
                f"ago is still {busy.doing}"
            )
            continue
        threading.Thread(target=_run, args=(task,), name=f"sync {cluster.slug}", daemon=True).start()
        launched.append(task)
    # One deadline for all, from the round's start: they run at once, so the round waits at most this.
    end = time.monotonic() + deadline
    for task in launched:
        if task.done.wait(max(0.0, end - time.monotonic())):
            _merge(report, task.report)
            continue
        note = (
            f"no answer within {deadline:g} s (CLUSTERRA_SYNC_CLUSTER_SECONDS) while {task.doing}; its round "
            f"goes on in the background and the next rounds skip {task.cluster.slug} until it ends"
        )
        log.warning("sync: %s: %s", task.cluster.slug, note)
        report.errors.append(f"{task.cluster.slug}/sync: {note}")
        # Unless it ended in the meantime: then its own row is the truth.
        SyncRound.objects.filter(cluster=task.cluster, started=task.started, finished__isnull=True).update(
            ok=False, detail=note[0].upper() + note[1:] + "."
        )


def _run(task: ClusterTask, *, threaded: bool = True) -> None:
    """One cluster's part of the round, its time recorded; on its own thread it closes what it opened."""
    cluster = task.cluster
    try:
        try:
            SyncRound.objects.update_or_create(
                cluster=cluster, defaults={"started": task.started, "finished": None}
            )
            sync_cluster(cluster, task.report, task.started, task)
        except Exception as e:  # the round goes on for the other clusters
            log.exception("sync: round of %s", cluster.slug)
            task.report.errors.append(f"{cluster.slug}/sync: {type(e).__name__}: {e}")
        seconds = time.monotonic() - task.clock
        try:
            _note_cluster(task, seconds)
        except Exception:
            log.exception("sync: round time of %s not recorded", cluster.slug)
        if threaded and seconds > settings.CLUSTERRA_SYNC_CLUSTER_SECONDS:
            log.warning(
                "sync: %s's round ended after %.1f s, in the background: %s",
                cluster.slug,
                seconds,
                _cluster_summary(task.report),
            )
    finally:
        if threaded:
            close_sessions()  # this thread's keep-alive connections to slurmrestd
            connections.close_all()  # back to the pool (PostgreSQL), or closed
            with _tasks_lock:
                if _tasks.get(cluster.pk) is task:
                    del _tasks[cluster.pk]
        task.done.set()


def wait_for_rounds(timeout: float | None = None) -> list[str]:
    """Wait for this process's cluster tasks still under way; the slugs of those still going after `timeout`.

    A loop that lets go of the lock waits for them first, so that the loop taking over never polls a
    cluster this one is still polling.
    """
    end = None if timeout is None else time.monotonic() + timeout
    with _tasks_lock:
        tasks = list(_tasks.values())
    for task in tasks:
        task.done.wait(None if end is None else max(0.0, end - time.monotonic()))
    return sorted(task.cluster.slug for task in tasks if not task.done.is_set())


def _merge(into: Report, part: Report) -> None:
    for name in (f.name for f in dataclasses.fields(Report)):
        setattr(into, name, getattr(into, name) + getattr(part, name))


def _cluster_summary(report: Report) -> str:
    return (
        f"{report.people} accounts polled ({report.unchanged} unchanged), {report.updated} jobs updated, "
        f"{report.started} started, {report.settled} settled, {report.released} released, "
        f"{report.recorded} outside uses recorded"
    )


def _note_cluster(task: ClusterTask, seconds: float) -> None:
    errors = task.report.errors
    if errors:
        more = len(errors) - 1
        detail = errors[0] + (f" (and {more} more error{'s' if more > 1 else ''})" if more else "")
    else:
        detail = _cluster_summary(task.report)
    SyncRound.objects.filter(cluster=task.cluster).update(
        finished=timezone.now(),
        seconds=round(seconds, 3),
        ok=not errors,
        detail=detail[:2000],
        accounts=task.report.people,
    )


def _note_loop(started: datetime, seconds: float, interval: float | None) -> None:
    """The loop's heartbeat (one row): when its last round ended, and in which process."""
    values = {
        "round_started": started,
        "round_finished": timezone.now(),
        "seconds": round(seconds, 3),
        "process": f"{socket.gethostname()}:{os.getpid()}",
        "interval": interval,
    }
    if SyncLoop.objects.filter(pk=1).update(**values):
        return
    try:
        with transaction.atomic():
            SyncLoop.objects.create(pk=1, **values)
    except IntegrityError:  # made by another process in the meantime
        SyncLoop.objects.filter(pk=1).update(**values)


def _warn_if_the_pool_is_small(clusters: int) -> None:
    global _pool_warned
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    if _pool_warned or not isinstance(pool, dict) or clusters < pool.get("max_size", clusters + 1):
        return
    _pool_warned = True
    log.warning(
        "sync: %d clusters are polled at once, each on a database connection of its own, and the loop keeps "
        "one more; CLUSTERRA_DB_POOL_SIZE=%d lets some of them wait: raise it above the number of clusters",
        clusters,
        pool["max_size"],
    )


# --- what /healthz shows staff -------------------------------------------------------------------

# The loop is stalled when no round ended for this many of its periods (interval + a cluster's deadline).
STALLED_PERIODS = 3


def stalled(loop: SyncLoop | None, now: datetime | None = None) -> bool:
    """Whether the loop that ran last stopped ending rounds (a `--once` round, from cron, is not judged)."""
    if loop is None or loop.interval is None:
        return False
    now = now or timezone.now()
    limit = STALLED_PERIODS * (loop.interval + settings.CLUSTERRA_SYNC_CLUSTER_SECONDS)
    return (now - loop.round_finished).total_seconds() > limit


def round_times(now: datetime | None = None) -> dict[str, Any]:
    """The loop's last round and each cluster's, as /healthz shows them to staff."""
    now = now or timezone.now()
    loop = SyncLoop.objects.filter(pk=1).first()
    if loop is None:
        state: dict[str, Any] = {
            "last_round_ended": None,
            "seconds_ago": None,
            "stalled": False,
            "detail": "No sync round has run yet: is `manage.py sync_jobs` running?",
        }
    else:
        ago = (now - loop.round_finished).total_seconds()
        every = f"every {loop.interval:g} s" if loop.interval is not None else "once (sync_jobs --once)"
        state = {
            "last_round_ended": loop.round_finished.isoformat(),
            "seconds_ago": round(ago, 1),
            "seconds": loop.seconds,
            "process": loop.process,
            "stalled": stalled(loop, now),
            "detail": f"The last round ended {ago:.0f} s ago in {loop.process}, which rounds {every}.",
        }
        if state["stalled"]:
            state["detail"] = (
                f"No sync round has ended for {ago:.0f} s, though the loop rounds every {loop.interval:g} s: "
                "job states and the usage ledger are not being kept up. Is `manage.py sync_jobs` running "
                "(a standby takes over within seconds)?"
            )
    clusters = {}
    for row in SyncRound.objects.select_related("cluster").order_by("cluster__slug"):
        running = row.finished is None and row.started is not None
        clusters[row.cluster.slug] = {
            "ok": row.ok,
            "seconds": row.seconds,
            "finished": row.finished.isoformat() if row.finished else None,
            "running_seconds": round((now - row.started).total_seconds(), 1) if running else None,
            "accounts": row.accounts,
            "detail": row.detail,
        }
    return state | {"clusters": clusters}


# --- the loop -----------------------------------------------------------------------------------


# An idle loop writes one line in this many rounds (10 minutes at the default 10 s interval).
QUIET_NOTE_ROUNDS = 60
# A standby asks for the lock this often, whatever the round interval: a killed loop's advisory lock is
# free as soon as PostgreSQL sees its connection close, and its standby must take over within seconds.
STANDBY_RETRY_SECONDS = 1.0


def run_forever(interval: float, *, stdout=None, rounds: int | None = None) -> None:
    """Poll every `interval` seconds while holding the lock; wait as a standby while another loop does."""
    lock = SingleInstance(holder_name())
    waiting_said = False
    active = False
    done = 0
    quiet = 0
    try:
        while rounds is None or done < rounds:
            started = time.monotonic()
            if lock.refresh():
                if not active:
                    log.info("sync: this loop is active (holder %s)", lock.holder)
                active, waiting_said = True, False
                report = sync_once(interval=interval)
                done += 1
                # A line per round that did something; an idle loop says so once every QUIET_NOTE_ROUNDS
                # rounds instead of every few seconds, so the demo's console log stays readable.
                quiet = 0 if report.eventful else quiet + 1
                if stdout is not None and (quiet == 0 or quiet % QUIET_NOTE_ROUNDS == 1):
                    note = "" if quiet <= 1 else f" (the last {quiet - 1} rounds changed nothing)"
                    stdout.write(f"{timezone.now():%H:%M:%S} {report.summary()}{note}\n")
                pause = interval
            else:
                if active:
                    # Its connection dropped (PostgreSQL restarted): another loop may be active now.
                    log.warning("sync: this loop lost the lock (holder %s); now a standby", lock.holder)
                active = False
                if not waiting_said and stdout is not None:
                    stdout.write("Another sync_jobs loop is active; waiting as a standby.\n")
                    waiting_said = True
                pause = min(interval, STANDBY_RETRY_SECONDS)
            if rounds is not None and done >= rounds:
                break
            time.sleep(max(0.0, pause - (time.monotonic() - started)))
    finally:
        busy = wait_for_rounds(0)
        if busy and stdout is not None:
            stdout.write(f"Waiting for the round of {', '.join(busy)} to end before letting the lock go.\n")
        wait_for_rounds()
        lock.release()
