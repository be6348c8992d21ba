"""The usage ledger through a job's life: reserved, attached to a job, started, then settled or released.

The one owner of a job's budget: submitting (jobs.submit) and the sync loop (jobs.claims,
jobs.tracking) call these as they learn what Slurm did, and nothing else writes a ledger entry
(access.models.Usage). Every step after the reservation may be called again with no further
effect (a retried sync loop, two workers seeing the same change):

    reserve()         → QUEUED    requested walltime x CPUs / GPUs held against every budget
    attach()            QUEUED    the reservation now belongs to a Slurm job id
    hold(), write()   → QUEUED    a submit's way: decided under the quota locks, then written with its
                                  job id once Slurm answers (or RELEASED, if it refused), in the same
                                  transaction, so the entry is born attached
    started()         → RUNNING   counts as running instead of queued; still reserved
    settle()          → SETTLED   the reservation is replaced by real use: elapsed x allocated
    release()         → RELEASED  nothing was used (the submit failed, or it was cancelled while queued)

A job array is one entry for all its tasks, reserved whole (tasks x each task's hours). The sync loop
tells it how many tasks wait and run (`array_progress`, for the job-count limits), hands over each
task's real use as the task ends (`task_ended`: that task's share of the reservation becomes what it
used), and closes it once every task has ended (`settle_array`), or releases it if none ever ran.

A reservation that was released and then turns out to have run after all (cancelled
in the instant it started) may still be settled: what Slurm says it used counts.
`release()` of a running job changes nothing, since only its real use may end it.
A job submitted outside the console was never reserved: `record_outside_use()` charges it when it ends.
See access.quota for which budgets an entry is charged to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from access import policy
from access.models import Usage
from access.policy import Decision, Resources
from accounts.models import User
from clusters.models import Cluster
from prepared import Prepared

logger = logging.getLogger("clusterra.access")

# (elapsed seconds, CPUs, GPUs) of one run of a job.
Run = tuple[int, int, int]

__all__ = [
    "Hold",
    "UnknownReservation",
    "array_progress",
    "attach",
    "hold",
    "record_outside_use",
    "release",
    "reserve",
    "settle",
    "settle_array",
    "started",
    "task_ended",
]


class UnknownReservation(LookupError):
    """No ledger entry has this reservation id."""


def reserve(person: Any, cluster: Cluster, request: Resources, *, dry_run: bool = False) -> Decision:
    """policy.decide("job.submit") and, when allowed and not a dry run, reserve the job's hours.

    The applicable quota rows are locked (SELECT … FOR UPDATE) for the whole check and
    the reservation is written in the same transaction, so two racing submits cannot
    both take the last slot or the last GPU-hour. A dry run gives the same decision,
    sentence and facts, reserves nothing and locks nothing. The reservation's id is the
    decision's `reservation_id`. Writes no audit event: the submit that asked does.
    """
    # No savepoint inside a caller's transaction (a submit's): an error here ends that whole transaction
    # anyway, and a denial is an answer, not an error. Alone, this block is the transaction.
    with transaction.atomic(savepoint=False):
        held = hold(person, cluster, request, dry_run=dry_run)
        if held.decision.allowed and not dry_run:
            return replace(held.decision, reservation_id=held.write())
    return held.decision


def hold(person: Any, cluster: Cluster, request: Resources, *, dry_run: bool = False) -> Hold:
    """reserve()'s decision under the quota locks, the entry left to `Hold.write` in the same transaction.

    A submit decides before it calls Slurm and knows the job's id only after; the quota rows stay locked
    until its transaction ends, so no other submit can draw on the same budget in between and the entry
    can wait for the id (one statement where a reservation and its attach() were two). Must be called
    inside the transaction that will write (or, with `dry_run`, anywhere: nothing is locked).
    """
    conn = transaction.get_connection()
    if not dry_run and not conn.in_atomic_block:
        raise RuntimeError("ledger.hold() outside a transaction: its locks would end before the entry")
    decision = policy.decide(person, "job.submit", cluster, request, lock=not dry_run)
    outer = conn.atomic_blocks[0] if conn.atomic_blocks else None
    return Hold(person, cluster, request, decision, outer)


class Hold:
    """A decision taken under the quota locks whose entry is not written yet (see hold())."""

    def __init__(self, person: Any, cluster: Cluster, request: Resources, decision: Decision, outer: Any):
        self.person, self.cluster, self.request, self.decision = person, cluster, request, decision
        self._outer = outer
        self.reservation_id: int | None = None

    def write(self, *, job_id: int | None = None, released: str = "") -> int:
        """The entry: QUEUED (attached to `job_id` if given), or RELEASED with `released` as its reason.

        Only for an allowed decision, once, in the transaction that took the locks: after it ends another
        submit may have drawn on the budget this decision saw.
        """
        if not self.decision.allowed:
            raise ValueError(f"nothing to reserve: the decision was {self.decision.code}")
        if self.reservation_id is not None:
            raise ValueError(f"this hold was already written as reservation {self.reservation_id}")
        blocks = transaction.get_connection().atomic_blocks
        if self._outer is None or not blocks or blocks[0] is not self._outer:
            raise RuntimeError("Hold.write() outside the transaction that took the quota locks")
        entry = open_reservation(self.person, self.cluster, self.request, job_id=job_id, released=released)
        self.reservation_id = entry.pk
        return entry.pk


def open_reservation(
    person: Any, cluster: Cluster, request: Resources, *, job_id: int | None = None, released: str = ""
) -> Usage:
    """Write the entry holding the request's hours. Only Hold.write calls this, under the quota locks."""
    entry = Usage.objects.create(
        cluster=cluster,
        user=person,
        username=person.get_username(),
        job_id=job_id,
        state=Usage.State.RELEASED if released else Usage.State.QUEUED,
        ended_at=timezone.now() if released else None,
        release_reason=released[:200],
        partition=request.partition,
        nodes=request.nodes,
        cpus=request.cpus,
        gpus=request.gpus,
        time_limit=request.time_limit,
        reserved_gpu_hours=request.gpu_hours,
        reserved_cpu_hours=request.cpu_hours,
        tasks=request.tasks,
        tasks_queued=request.tasks if request.tasks > 1 else 0,
    )
    # Straight into the entry-group table: a new entry has no links yet, so groups.add()'s look for
    # existing ones would be a query for nothing.
    link = Usage.groups.through
    link.objects.bulk_create(
        [link(usage_id=entry.pk, group_id=row["group_id"]) for row in _GROUPS.rows(person.pk)]
    )
    return entry


# Read by every reservation, under its quota locks: compiled once.
_GROUPS = Prepared(
    lambda user_id: User.groups.through.objects.filter(user_id=user_id).values("group_id"), int
)


def attach(reservation_id: int, job_id: int) -> None:
    """slurmrestd accepted the job: the reservation now belongs to `job_id`.

    The usual case, a reservation not yet attached, is one conditional UPDATE (a submit's own
    transaction made the entry a moment ago); anything else is looked at under the row's lock.
    No use changes, so nothing the policy holds needs to hear of it.
    """
    if Usage.objects.filter(pk=reservation_id, job_id__isnull=True).update(job_id=job_id):
        return
    with transaction.atomic():
        entry = _locked(reservation_id)
        if entry.job_id == job_id:
            return
        if entry.job_id is not None:
            raise ValueError(
                f"reservation {reservation_id} already belongs to job {entry.job_id}, not {job_id}"
            )
        entry.job_id = job_id
        entry.save(update_fields=["job_id"])


def release(reservation_id: int, reason: str) -> None:
    """Give the whole reservation back: the submit failed, or the job was cancelled before it started."""
    with transaction.atomic():
        entry = _locked(reservation_id)
        if entry.state == Usage.State.RUNNING:
            # Releasing would forget hours the job is using; the sync loop settles it when it ends.
            logger.warning(
                "reservation %s (job %s) is running; not released (%s)", reservation_id, entry.job_id, reason
            )
            return
        if entry.state != Usage.State.QUEUED:
            return
        entry.state = Usage.State.RELEASED
        entry.ended_at = timezone.now()
        entry.release_reason = reason[:200]
        entry.save(update_fields=["state", "ended_at", "release_reason"])


def started(reservation_id: int) -> None:
    """The job is RUNNING: it counts as running instead of queued, and stays reserved."""
    with transaction.atomic():
        entry = _locked(reservation_id)
        if entry.state != Usage.State.QUEUED:
            return
        entry.state = Usage.State.RUNNING
        entry.started_at = timezone.now()
        entry.save(update_fields=["state", "started_at"])


def settle(
    reservation_id: int,
    *,
    elapsed_seconds: int,
    cpus: int,
    gpus: int,
    ended: datetime | None = None,
    earlier_runs: Sequence[Run] = (),
) -> None:
    """The job ended: replace its reservation by real use, elapsed x allocated CPUs and GPUs.

    `ended` is when Slurm says the job ended (default: now); the use counts in that period.
    `earlier_runs` are (elapsed seconds, CPUs, GPUs) of the runs before a requeue: each is charged too.
    """
    _check_use(elapsed_seconds, cpus, gpus)
    for run in earlier_runs:
        _check_use(*run)
    with transaction.atomic():
        entry = _locked(reservation_id)
        if entry.state == Usage.State.SETTLED:
            return
        _set_use(entry, elapsed_seconds, cpus, gpus, ended or timezone.now(), earlier_runs)
        entry.save(update_fields=["state", "elapsed_seconds", "used_gpu_hours", "used_cpu_hours", "ended_at"])


def array_progress(reservation_id: int, *, queued: int, running: int) -> None:
    """How many of an array's tasks wait and run now, as Slurm lists them (the job-count limits read it)."""
    if min(queued, running) < 0:
        raise ValueError(f"task counts cannot be negative: {queued=} {running=}")
    with transaction.atomic():
        entry = _locked(reservation_id)
        if entry.state not in Usage.OPEN or (entry.tasks_queued, entry.tasks_running) == (queued, running):
            return
        entry.tasks_queued, entry.tasks_running = queued, running
        entry.save(update_fields=["tasks_queued", "tasks_running"])


def task_ended(
    reservation_id: int,
    *,
    elapsed_seconds: int,
    cpus: int,
    gpus: int,
    earlier_runs: Sequence[Run] = (),
) -> None:
    """One task of an array ended: its share of the reservation is replaced by what it really used.

    Not idempotent by itself: the caller makes it once per task (jobs.tracking moves the task's record
    on in the same transaction). The entry stays open until settle_array, so what the array's other
    tasks still hold stays reserved.
    """
    _check_use(elapsed_seconds, cpus, gpus)
    for run in earlier_runs:
        _check_use(*run)
    runs = [(elapsed_seconds, cpus, gpus), *earlier_runs]
    with transaction.atomic():
        entry = _locked(reservation_id)
        if entry.state in Usage.OPEN:
            share = entry.time_limit / 60
            entry.reserved_gpu_hours = max(0.0, entry.reserved_gpu_hours - share * entry.gpus)
            entry.reserved_cpu_hours = max(0.0, entry.reserved_cpu_hours - share * entry.cpus)
        elif entry.state == Usage.State.RELEASED:
            # Released as never run, yet a task did run (cancelled in the instant it started): it counts.
            entry.state = Usage.State.SETTLED
        entry.elapsed_seconds = (entry.elapsed_seconds or 0) + sum(run[0] for run in runs)
        entry.used_gpu_hours += sum(seconds / 3600 * n for seconds, _, n in runs)
        entry.used_cpu_hours += sum(seconds / 3600 * n for seconds, n, _ in runs)
        entry.save(
            update_fields=[
                "state",
                "reserved_gpu_hours",
                "reserved_cpu_hours",
                "elapsed_seconds",
                "used_gpu_hours",
                "used_cpu_hours",
            ]
        )


def settle_array(reservation_id: int, *, ended: datetime | None = None) -> None:
    """Every task of the array has ended: the entry holds their use (task_ended) and nothing more."""
    with transaction.atomic():
        entry = _locked(reservation_id)
        if entry.state not in Usage.OPEN:
            return
        entry.state = Usage.State.SETTLED
        entry.tasks_queued = entry.tasks_running = 0
        entry.ended_at = ended or timezone.now()
        entry.save(update_fields=["state", "tasks_queued", "tasks_running", "ended_at"])


def record_outside_use(
    person: Any,
    cluster: Cluster,
    job_id: int,
    *,
    elapsed_seconds: int,
    cpus: int,
    gpus: int,
    ended: datetime,
    earlier_runs: Sequence[Run] = (),
) -> None:
    """A job submitted outside the console (sbatch in the browser terminal) ended: charge its use.

    It was never reserved, so it may take a budget past its limit; what is left then
    shows 0 and the next submission through the console waits for the renewal.
    Recorded once per cluster and job id.
    """
    _check_use(elapsed_seconds, cpus, gpus)
    with transaction.atomic():
        if Usage.objects.filter(cluster=cluster, job_id=job_id).exists():
            return
        entry = Usage(
            cluster=cluster,
            user=person,
            username=person.get_username(),
            job_id=job_id,
            origin=Usage.Origin.OUTSIDE,
            cpus=cpus,
            gpus=gpus,
        )
        _set_use(entry, elapsed_seconds, cpus, gpus, ended, earlier_runs)
        entry.save()
        entry.groups.add(*person.groups.all())


def _locked(reservation_id: int) -> Usage:
    try:
        return Usage.objects.select_for_update().get(pk=reservation_id)
    except Usage.DoesNotExist:
        raise UnknownReservation(f"no reservation {reservation_id} in the ledger") from None


def _check_use(elapsed_seconds: int, cpus: int, gpus: int) -> None:
    if min(elapsed_seconds, cpus, gpus) < 0:
        raise ValueError(f"use cannot be negative: {elapsed_seconds=} {cpus=} {gpus=}")


def _set_use(
    entry: Usage,
    elapsed_seconds: int,
    cpus: int,
    gpus: int,
    ended: datetime,
    earlier_runs: Sequence[Run] = (),
) -> None:
    runs = [(elapsed_seconds, cpus, gpus), *earlier_runs]
    entry.state = Usage.State.SETTLED
    entry.elapsed_seconds = sum(run[0] for run in runs)
    entry.used_gpu_hours = sum(seconds / 3600 * n for seconds, _, n in runs)
    entry.used_cpu_hours = sum(seconds / 3600 * n for seconds, n, _ in runs)
    entry.ended_at = ended
