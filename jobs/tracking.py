"""One job followed: what Slurm says about it into its JobRecord, and the ledger call that calls for.

The sync loop (jobs.sync) applies every job it lists; a job page refreshes its own job the same way
(jobs.control). Each ledger call is made exactly once: the record's `ledger` field moves
reserved → started → settled (or → released for a job that ended before it started) by a
compare-and-set update in the same transaction as the access.ledger call, so the loop, a job
page refreshing the same job, or a loop restarted mid-way cannot settle twice. A job submitted
outside the console has no reservation: its use is recorded once, when it ends.

A job array is one record with a child record per task Slurm lists on its own (`apply_array`). Slurm
shows the tasks not yet started in the array's own record ("3-99%10", pending), and one record per task
that started, with its own job id; the last task to start takes over the array's id. The array's
reservation covers every task: each task's real use goes into it as the task ends (its record's
`ledger` moves "" → settled with `ledger.task_ended`, once), and the array is settled once every task
ended (or released if none ever ran). Tasks of an array from outside the console are charged one by one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from access import ledger
from access.arrays import array_tasks, distinct_tasks
from clusters.models import Cluster
from clusters.slurm import FINISHED_JOB_STATES, Job
from jobs import accounting, output
from jobs.models import JobRecord

Ledger = JobRecord.Ledger
RUNNING_STATES = frozenset({"RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING"})


@dataclass
class Report:
    """What a sync did, counted: one round keeps one across every person, job and claim."""

    people: int = 0
    unchanged: int = 0
    updated: int = 0
    created: int = 0
    started: int = 0
    settled: int = 0
    released: int = 0
    recorded: int = 0
    confirmed: int = 0
    refused: int = 0
    cancelled: int = 0
    limited: int = 0
    suspended: int = 0
    offboarded: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def eventful(self) -> bool:
        """Whether the round changed anything or met an error (a quiet round is not worth a log line)."""
        changes = (self.updated, self.created, self.started, self.settled, self.released, self.recorded)
        later = (self.confirmed, self.refused, self.cancelled, self.limited, self.suspended, self.offboarded)
        return any(changes) or any(later) or bool(self.errors)

    def summary(self) -> str:
        return (
            f"{self.people} people polled ({self.unchanged} unchanged), {self.updated} jobs updated, "
            f"{self.created} seen outside the console, {self.started} started, {self.settled} settled, "
            f"{self.released} released, {self.recorded} outside uses recorded, "
            f"{self.confirmed} unanswered submits confirmed, {self.refused} refused by Slurm's policy, "
            f"{self.cancelled} cancelled as no longer allowed, {self.limited} people's Slurm limits set, "
            f"{self.suspended} accounts locked for want of a grant, "
            f"{self.offboarded} people their IdP no longer accepts offboarded, "
            f"{len(self.errors)} errors"
        )


def has_run(job: Job) -> bool:
    """Whether the job ever ran: Slurm fills start_time even for one cancelled while pending."""
    if job.state in RUNNING_STATES:
        return True
    return (
        job.state in FINISHED_JOB_STATES and bool(job.nodes or job.batch_host) and job.start_time is not None
    )


def _fields_from(job: Job) -> dict[str, object]:
    started = has_run(job)
    finished = job.state in FINISHED_JOB_STATES
    values: dict[str, object] = {
        "state": job.state,
        "reason": "" if job.state_reason == "None" else job.state_reason[:128],
        "name": job.name[:200],
        "partition": job.partition[:64],
        "account": job.account[:64],
        "qos": job.qos[:64],
        "submit_time": job.submit_time,
        # A pending job's start_time is Slurm's estimate, a running one's end_time its deadline.
        "start_time": job.start_time if started else None,
        "end_time": job.end_time if finished else None,
        "time_limit": job.time_limit,
        "node_list": job.nodes[:255],
        "exit_code": job.exit_code,
        "exit_signal": job.exit_signal,
    }
    if job.node_count:
        values["node_count"] = job.node_count
    if job.cpus:
        values["cpus"] = job.cpus
    if job.gpus or started:
        values["gpus"] = job.gpus
    if job.memory_mb:
        values["memory_mb"] = job.memory_mb
    if job.working_directory:
        values["working_directory"] = job.working_directory
    return values


def apply(record: JobRecord, job: Job, report: Report | None = None) -> bool:
    """Bring `record` in line with `job` and make the ledger calls that calls for; True if it changed."""
    report = report if report is not None else Report()
    values = _fields_from(job)
    changed = [name for name, value in values.items() if getattr(record, name) != value]
    for name in changed:
        setattr(record, name, values[name])
    if record.origin == JobRecord.Origin.OUTSIDE or not record.stdout_path:
        # Expanded once the record holds Slurm's working directory, name and nodes.
        paths = output.paths_for(record, job.standard_output, job.standard_error)
        for name, value in zip(("stdout_path", "stderr_path"), paths, strict=True):
            if getattr(record, name) != value:
                setattr(record, name, value)
                changed.append(name)
    now = timezone.now()
    record.last_seen = now
    if changed:
        record.save(update_fields=[*changed, "last_seen", "updated"])
        report.updated += 1
    else:
        # Seen but unchanged: no `updated` bump, so live lists do not redraw for nothing.
        JobRecord.objects.filter(pk=record.pk).update(last_seen=now)
    _settle(record, job, report)
    return bool(changed)


def _advance(record: JobRecord, expected: str, to: str, call) -> bool:
    """Move the ledger step from `expected` to `to` and make its call, both or neither."""
    with transaction.atomic():
        moved = JobRecord.objects.filter(pk=record.pk, ledger=expected).update(
            ledger=to, updated=timezone.now()
        )
        if not moved:
            record.refresh_from_db(fields=["ledger"])
            return False
        call()
    record.ledger = to
    return True


def _settle(record: JobRecord, job: Job, report: Report) -> None:
    started = has_run(job)
    finished = job.state in FINISHED_JOB_STATES
    elapsed = _elapsed(job)
    cpus = job.cpus or record.cpus
    gpus = job.gpus if started else record.gpus
    earlier: list[tuple[int, int, int]] = []
    if (
        finished
        and started
        and job.restarts
        and record.ledger in (Ledger.RESERVED, Ledger.STARTED, Ledger.NONE)
    ):
        found = _earlier_runs(record, job, cpus)
        if found is None:
            return  # accounting has not listed every run yet: settle next round, all of them
        earlier = found
    if record.array_parent_id is not None:
        parent = record.array_parent
        if parent.reservation_id is not None:
            _settle_task(record, parent.reservation_id, job, report, elapsed, cpus, gpus, earlier)
            return
    if record.reservation_id is not None:
        rid = record.reservation_id
        if (
            started
            and record.ledger == Ledger.RESERVED
            and _advance(record, Ledger.RESERVED, Ledger.STARTED, lambda: ledger.started(rid))
        ):
            report.started += 1
        if finished and record.ledger in (Ledger.RESERVED, Ledger.STARTED):
            if started:
                if _advance(
                    record,
                    record.ledger,
                    Ledger.SETTLED,
                    lambda: ledger.settle(
                        rid, elapsed_seconds=elapsed, cpus=cpus, gpus=gpus, earlier_runs=earlier
                    ),
                ):
                    report.settled += 1
            elif _advance(
                record,
                record.ledger,
                Ledger.RELEASED,
                lambda: ledger.release(rid, f"job {job.job_id} ended ({job.state}) before it started"),
            ):
                report.released += 1
        return
    if record.origin == JobRecord.Origin.OUTSIDE and finished and record.ledger == Ledger.NONE and started:
        person = record.person
        if person is None:
            return
        if _advance(
            record,
            Ledger.NONE,
            Ledger.RECORDED,
            lambda: ledger.record_outside_use(
                person,
                record.cluster,
                job.job_id,
                elapsed_seconds=elapsed,
                cpus=cpus,
                gpus=gpus,
                ended=job.end_time or timezone.now(),
                earlier_runs=earlier,
            ),
        ):
            report.recorded += 1


# How long after a requeued job ended the loop waits for accounting to list all its runs.
RUNS_PATIENCE = timedelta(minutes=10)


def _earlier_runs(record: JobRecord, job: Job, cpus: int) -> list[tuple[int, int, int]] | None:
    """(elapsed, CPUs, GPUs) of each run of a requeued job before its last; None to ask again later.

    Slurm lists only the last run; accounting has them all. Until it lists as many earlier runs
    as Slurm says the job restarted (slurmdbd may lag), the job is not settled, for at most
    RUNS_PATIENCE: after that what accounting has is charged.
    """
    if not record.cluster.has_accounting:
        return []
    listed = accounting.runs(
        record.cluster, record.posix_user, job.job_id, array_task=record.array_parent_id is not None
    )
    patient = job.end_time is not None and timezone.now() - job.end_time < RUNS_PATIENCE
    if listed is None:
        return None if patient else []
    last_start = job.start_time
    earlier = [
        (r.elapsed_seconds, r.cpus or cpus, r.gpus)
        for r in listed
        if r.start_time is not None
        and r.end_time is not None
        and (last_start is None or r.end_time <= last_start)
    ]
    if len(earlier) < job.restarts and patient:
        return None
    return earlier


def _elapsed(job: Job) -> int:
    if job.start_time is None or not has_run(job):
        return 0
    end = job.end_time if job.state in FINISHED_JOB_STATES and job.end_time else timezone.now()
    return max(0, int((end - job.start_time).total_seconds()))


def from_sacct(cluster: Cluster, name: str, job_id: int, *, array_task: bool = False) -> Job | None:
    """A finished job from accounting, read with sacct as its owner on the head node; None if unknown.

    Its last run is the job; the runs before it (a requeued job) are counted in `restarts`. With
    `array_task`, `job_id` is one task of an array (its own job id).
    """
    listed = accounting.runs(cluster, name, job_id, array_task=array_task)
    if not listed:
        return None
    last = listed[-1]
    status = accounting.exit_status(cluster, name, job_id)
    exit_code, exit_signal = status or (last.exit_code, last.exit_signal)
    return _from_runs(name, listed, job_id=job_id, exit_code=exit_code, exit_signal=exit_signal)


def _from_runs(name: str, runs: list[accounting.Run], **given: Any) -> Job:
    """The job accounting's runs describe: its last run, the runs before it (requeues) counted as restarts."""
    last = runs[-1]
    described = {
        "job_id": last.job_id,
        "name": last.name,
        "user_name": name,
        "partition": last.partition,
        "state": last.state,
        "exit_code": last.exit_code,
        "exit_signal": last.exit_signal,
        "submit_time": last.submit_time,
        "start_time": last.start_time,
        "end_time": last.end_time,
        "cpus": last.cpus,
        "gpus": last.gpus,
        "nodes": last.nodes,
        "working_directory": last.working_directory,
        "array_job_id": last.array_job_id,
        "array_task_id": last.array_task_id,
        "restarts": len(runs) - 1,
    }
    return Job(**(described | given))


# --- job arrays -----------------------------------------------------------------------------------

# The state of an array whose tasks all ended: the first of these any task ended in, else COMPLETED.
ENDED_ARRAY_STATES = (
    "FAILED",
    "OUT_OF_MEMORY",
    "TIMEOUT",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "CANCELLED",
)


def _settle_task(
    record: JobRecord,
    rid: int,
    job: Job,
    report: Report,
    elapsed: int,
    cpus: int,
    gpus: int,
    earlier: list[tuple[int, int, int]],
) -> None:
    """A console array's task ended after running: its use goes into the array's reservation, once."""
    if not (job.state in FINISHED_JOB_STATES and has_run(job)) or record.ledger != Ledger.NONE:
        return
    if _advance(
        record,
        Ledger.NONE,
        Ledger.SETTLED,
        lambda: ledger.task_ended(rid, elapsed_seconds=elapsed, cpus=cpus, gpus=gpus, earlier_runs=earlier),
    ):
        report.settled += 1


def array_from_sacct(cluster: Cluster, name: str, array_job_id: int) -> list[Job] | None:
    """An array Slurm no longer lists, as accounting has it: its tasks (and never-started remainder)."""
    listed = accounting.array_runs(cluster, name, array_job_id)
    if listed is None:
        return None
    runs: dict[int | None, list[accounting.Run]] = {}
    for run in listed:
        runs.setdefault(run.array_task_id, []).append(run)
    jobs: list[Job] = []
    for task_id, task_runs in runs.items():
        jobs.append(
            _from_runs(
                name,
                task_runs,
                array_job_id=array_job_id,
                array_task_id=task_id,
                array_task_string=task_runs[-1].array_task_string if task_id is None else "",
            )
        )
    return jobs


def apply_array(parent: JobRecord, jobs: list[Job], report: Report | None = None) -> bool:
    """Bring a job array's record and its tasks' records in line with what Slurm lists of it.

    `jobs` is every job the listing holds for the array (`array_job_id` = the parent's id): its own
    record of the tasks not started yet, and one per task. An empty list means Slurm no longer lists
    the array at all (every task started and was forgotten, or all ended): only the tasks already
    recorded count then. True if the array's record changed.
    """
    report = report if report is not None else Report()
    held = next((j for j in jobs if j.array_task_id is None), None)
    tasks = {c.array_task_id: c for c in parent.tasks.all()}
    for record in tasks.values():
        record.array_parent = parent  # one array, read once: each task's ledger step asks for it
    for job in sorted((j for j in jobs if j.array_task_id is not None), key=lambda j: j.array_task_id):
        record = tasks.get(job.array_task_id)
        if record is None:
            record = _task_record(parent, job)
            tasks[job.array_task_id] = record
        apply(record, job, report)
    return summarise(parent, list(tasks.values()), held, jobs, report)


def _task_record(parent: JobRecord, job: Job) -> JobRecord:
    record, _ = JobRecord.objects.get_or_create(
        array_parent=parent,
        array_task_id=job.array_task_id,
        defaults={
            "cluster": parent.cluster,
            "person": parent.person,
            "posix_user": parent.posix_user,
            "slurm_job_id": job.job_id,
            "origin": parent.origin,
            "script_path": parent.script_path,
            "ledger": Ledger.NONE,
        },
    )
    record.array_parent = parent
    return record


def held_tasks(held: Job | None, parent: JobRecord, started: int) -> int:
    """How many tasks the array's own record still holds, never started ("3-99%10" holds 97)."""
    if held is None:
        return 0
    try:
        return array_tasks(held.array_task_string or "")[0]
    except ValueError:
        pass
    # Slurm did not say which (a Job read from elsewhere): what was submitted less what started.
    try:
        return max(1, array_tasks(parent.array)[0] - started) if parent.array else 1
    except ValueError:
        return 1


def summarise(
    parent: JobRecord, tasks: list[JobRecord], held: Job | None, jobs: list[Job], report: Report
) -> bool:
    """The array's record from its tasks: counts by state, one state for all, and its ledger steps."""
    counts = Counter(t.state or "PENDING" for t in tasks)
    held_count = held_tasks(held, parent, len(tasks))
    held_state = held.state if held is not None else ""
    if held_count:
        counts[held_state or "PENDING"] += held_count
    if jobs:
        # A task cancelled while the array still held it leaves no trace in Slurm (nor in accounting):
        # what the console submitted and Slurm no longer shows was cancelled so.
        submitted = distinct_tasks(parent.array) if parent.array else None
        if submitted and submitted > len(tasks) + held_count:
            counts["CANCELLED"] += submitted - len(tasks) - held_count
    running = sum(counts[s] for s in RUNNING_STATES)
    waiting = counts["PENDING"]
    if running:
        state = "RUNNING"
    elif waiting:
        state = "PENDING"
    else:
        state = next((s for s in ENDED_ARRAY_STATES if counts[s]), "COMPLETED" if counts else parent.state)
    ended = not running and not waiting and bool(counts)
    ran = [t for t in tasks if t.start_time is not None]
    values: dict[str, object] = {
        "state": state,
        "reason": (held.state_reason if held is not None and held.state_reason != "None" else "")[:128]
        if waiting
        else "",
        "start_time": min((t.start_time for t in ran), default=None),
        "end_time": max((t.end_time for t in tasks if t.end_time), default=None) if ended else None,
        "array_summary": {
            "counts": dict(sorted(counts.items())),
            "held": (held.array_task_string or "")[:100] if held_count else "",
            "held_state": held_state if held_count else "",
        },
    }
    # The array's own words (name, partition, …) from its held record, or any task.
    sample = held or (jobs[0] if jobs else None)
    if sample is not None:
        words = _fields_from(sample)
        for name in ("name", "partition", "account", "qos", "submit_time", "time_limit"):
            values[name] = words[name]
        for name in ("node_count", "cpus", "gpus", "memory_mb", "working_directory"):
            if words.get(name):
                values[name] = words[name]
    changed = [name for name, value in values.items() if getattr(parent, name) != value]
    for name in changed:
        setattr(parent, name, values[name])
    now = timezone.now()
    parent.last_seen = now
    if changed:
        parent.save(update_fields=[*changed, "last_seen", "updated"])
        report.updated += 1
    else:
        JobRecord.objects.filter(pk=parent.pk).update(last_seen=now)
    _settle_array(parent, tasks, running, waiting, ended, report)
    return bool(changed)


def _settle_array(
    parent: JobRecord, tasks: list[JobRecord], running: int, waiting: int, ended: bool, report: Report
) -> None:
    rid = parent.reservation_id
    if rid is None or parent.ledger not in (Ledger.RESERVED, Ledger.STARTED):
        return
    ran = [t for t in tasks if t.start_time is not None]
    if (
        ran
        and parent.ledger == Ledger.RESERVED
        and _advance(parent, Ledger.RESERVED, Ledger.STARTED, lambda: ledger.started(rid))
    ):
        report.started += 1
    if not ended:
        ledger.array_progress(rid, queued=waiting, running=running)
        return
    if any(t.ledger == Ledger.NONE for t in ran):
        return  # a task's use is not in yet (accounting lags for a requeued one): settle next round
    if ran:
        end = parent.end_time
        if _advance(parent, parent.ledger, Ledger.SETTLED, lambda: ledger.settle_array(rid, ended=end)):
            report.settled += 1
    elif _advance(
        parent,
        parent.ledger,
        Ledger.RELEASED,
        lambda: ledger.release(
            rid, f"array {parent.slurm_job_id} ended ({parent.state}) before any task ran"
        ),
    ):
        report.released += 1
