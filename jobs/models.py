"""The console's record of each job: what was asked, what Slurm says about it, and its ledger step."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from clusters.models import Cluster
from clusters.slurm import FINISHED_JOB_STATES


class JobRecordQuerySet(models.QuerySet):
    def submitted(self) -> JobRecordQuerySet:
        """Rows with a Slurm job id: a row without one is a submission still on its way (a claim)."""
        return self.filter(slurm_job_id__isnull=False)

    def active(self) -> JobRecordQuerySet:
        return self.submitted().exclude(state__in=FINISHED_JOB_STATES)


class JobRecord(models.Model):
    """One Slurm job of one person on one cluster.

    A row is written *before* slurmrestd is asked (with no `slurm_job_id`) so that a
    retried submit with the same Idempotency-Key finds it and never queues twice; it
    gets its job id when Slurm answers, and is deleted if Slurm refuses, so no row is
    left half-written. When no usable answer comes (a timeout, a dropped connection)
    the row stays `unconfirmed` with its reservation until the sync loop finds the job
    by `submit_tag` or gives up. `state` and `reason` are in Slurm's own words.
    """

    class Origin(models.TextChoices):
        CONSOLE = "console", "Submitted through the console"
        OUTSIDE = "outside", "Seen outside the console (e.g. sbatch in a terminal)"

    class Ledger(models.TextChoices):
        # Which access.ledger call was made last, so each is made exactly once.
        NONE = "", "Nothing in the ledger"
        RESERVED = "reserved", "Budget reserved"
        STARTED = "started", "Started"
        SETTLED = "settled", "Settled with real use"
        RELEASED = "released", "Reservation released"
        RECORDED = "recorded", "Outside use recorded"

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="job_records")
    person = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="job_records"
    )
    posix_user = models.CharField("POSIX user", max_length=32)
    slurm_job_id = models.PositiveBigIntegerField("Slurm job id", null=True, blank=True)
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.CONSOLE)

    name = models.CharField(max_length=200, blank=True)
    partition = models.CharField(max_length=64, blank=True)
    account = models.CharField(max_length=64, blank=True)
    qos = models.CharField("QOS", max_length=64, blank=True)
    # The --array expression as submitted through the console (empty for a plain job).
    array = models.CharField(max_length=100, blank=True)
    # A job array is one record (slurm_job_id: the array's job id) with a child record per task that Slurm
    # listed on its own (started, or cancelled apart): jobs.tracking.apply_array. A task's slurm_job_id is
    # its own job id; the last task to start takes over the array's id, so the id alone is not unique.
    array_parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="tasks", verbose_name="array"
    )
    array_task_id = models.PositiveIntegerField("array task id", null=True, blank=True)
    # On an array's record: its tasks by Slurm state, and the tasks still held in the array's own record
    # ("held": Slurm's array_task_string such as "3-99%10"; "held_state": that record's state).
    array_summary = models.JSONField(default=dict, blank=True)
    state = models.CharField(
        max_length=24, blank=True, db_index=True, help_text="Slurm's word, e.g. RUNNING."
    )
    reason = models.CharField(max_length=128, blank=True, help_text="Slurm's state reason, e.g. Resources.")
    policy_note = models.TextField(
        blank=True, help_text="Why the console cancelled the job: the policy no longer allows it."
    )

    submit_time = models.DateTimeField(null=True, blank=True)
    start_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)

    time_limit = models.PositiveIntegerField("time limit (minutes)", null=True, blank=True)
    node_count = models.PositiveIntegerField(default=1)
    cpus = models.PositiveIntegerField(default=1)
    gpus = models.PositiveIntegerField(default=0)
    memory_mb = models.PositiveIntegerField("memory per node (MB)", null=True, blank=True)
    node_list = models.CharField(max_length=255, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    exit_signal = models.IntegerField(null=True, blank=True)

    script_path = models.CharField(max_length=4096, blank=True)
    working_directory = models.CharField(max_length=4096, blank=True)
    stdout_path = models.CharField(max_length=4096, blank=True)
    stderr_path = models.CharField(max_length=4096, blank=True)

    reservation_id = models.BigIntegerField(null=True, blank=True)
    ledger = models.CharField(max_length=8, choices=Ledger.choices, blank=True, default=Ledger.NONE)
    idempotency_key = models.CharField(max_length=255, blank=True)
    request_digest = models.CharField(max_length=64, blank=True)
    # Sent as the Slurm job's comment, so the job can be found when the submit's answer is lost.
    submit_tag = models.CharField(max_length=64, blank=True)
    # Set on a claim whose submit got no usable answer: Slurm may or may not have queued it,
    # so its reservation is held until the sync loop finds the tagged job or gives up.
    unconfirmed_since = models.DateTimeField(null=True, blank=True)
    # The job as the console sent it (and the directives it came from), for the detail page.
    submitted = models.JSONField(default=dict, blank=True)

    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    last_seen = models.DateTimeField(null=True, blank=True, help_text="When Slurm last reported the job.")

    objects = JobRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["person", "cluster", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="one_job_per_idempotency_key",
            ),
            models.UniqueConstraint(
                fields=["array_parent", "array_task_id"],
                condition=Q(array_parent__isnull=False),
                name="one_record_per_array_task",
            ),
        ]
        indexes = [
            # The job list: one person's jobs on one cluster, newest first, filtered by state/partition.
            # With id, so the page's "-created, -id" order is read off the index instead of sorting
            # all of the person's rows for every page (~17 ms at 10,000 jobs, bench/README.md).
            models.Index(
                fields=["person", "cluster", "-created", "-id"], name="jobs_person_cluster_created_id"
            ),
            # "Has anything of mine changed since update_time?" from the live list.
            models.Index(fields=["person", "cluster", "updated"], name="jobs_person_cluster_updated"),
            models.Index(fields=["cluster", "slurm_job_id"], name="jobs_cluster_job_id"),
        ]

    def __str__(self) -> str:
        return f"{self.cluster.slug} job {self.slurm_job_id or '(submitting)'} of {self.posix_user}"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_JOB_STATES

    @property
    def is_array(self) -> bool:
        """The record of a whole job array (its tasks are child records)."""
        return self.array_parent_id is None and bool(self.array or self.array_summary)

    @property
    def is_array_task(self) -> bool:
        return self.array_parent_id is not None

    @property
    def job_id_text(self) -> str:
        """The id Slurm's commands take: "123" for a job or an array, "123_4" for one task of array 123."""
        if self.array_parent_id is not None:
            return f"{self.array_parent.slurm_job_id}_{self.array_task_id}"
        return str(self.slurm_job_id or "")

    @property
    def elapsed_seconds(self) -> int | None:
        if self.start_time is None:
            return None
        end = self.end_time or timezone.now()
        return max(0, int((end - self.start_time).total_seconds()))


class SyncLock(models.Model):
    """The lock row that keeps one sync loop active on databases without advisory locks (SQLite)."""

    name = models.CharField(max_length=32, primary_key=True)
    holder = models.CharField(max_length=128, blank=True)
    expires = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'}"


class SyncRound(models.Model):
    """The sync loop's latest round on one cluster, where every web worker can read it (/healthz, staff).

    Written by the loop's task for that cluster as it starts and ends, and by the loop itself when the
    task outlasts the round's deadline (CLUSTERRA_SYNC_CLUSTER_SECONDS). `seconds`, `ok`, `detail` and
    `accounts` describe the last round that ended; `finished` is empty while a round is under way.
    """

    cluster = models.OneToOneField(Cluster, on_delete=models.CASCADE, related_name="sync_round")
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    detail = models.TextField(blank=True, help_text="The round's summary, or its first error.")
    accounts = models.PositiveIntegerField("accounts polled", default=0)

    def __str__(self) -> str:
        return f"sync of {self.cluster.slug}: {'ok' if self.ok else 'not ok'}"


class SyncLoop(models.Model):
    """When the active sync loop last ended a round (one row), so a stalled loop shows in /healthz."""

    round_started = models.DateTimeField()
    round_finished = models.DateTimeField()
    seconds = models.FloatField()
    # "host:pid" of the process that ran it: after a failover, the standby that took over.
    process = models.CharField(max_length=128, blank=True)
    # Seconds between rounds (`sync_jobs --interval`); empty for a single `--once` round (cron).
    interval = models.FloatField(null=True, blank=True)

    def __str__(self) -> str:
        return f"sync loop: last round ended {self.round_finished:%Y-%m-%d %H:%M:%S} in {self.process}"
