"""What people may do on a cluster: grants, quotas (with their change history) and the usage ledger."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from clusters.models import Cluster

# Slurm's partition names are plain words; anything else in the field is a typo worth catching early.
PARTITION_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
HOLDER_EXACTLY_ONE = Q(group__isnull=False, user__isnull=True) | Q(group__isnull=True, user__isnull=False)


class HeldByGroupOrPerson(models.Model):
    """A row that belongs to either a group or one person on one cluster, never both."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="+")
    group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Everyone in this group (IdP-managed or made by hand). Leave empty for one person.",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name="person",
        help_text="One person. Leave empty for a group.",
    )
    note = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def scope(self) -> str:
        """How the product names the holder in a sentence: 'group ml-team' or 'you'."""
        return f"group {self.group.name}" if self.group_id else "you"

    @property
    def holder_name(self) -> str:
        return f"group {self.group.name}" if self.group_id else f"person {self.user.get_username()}"

    def clean(self) -> None:
        if bool(self.group_id) == bool(self.user_id):
            raise ValidationError("Choose a group or a person, not both and not neither.")


class Grant(HeldByGroupOrPerson):
    """Access to a cluster: which partitions may be submitted to, and whether the browser terminal opens.

    Everything a person holds adds up: their own grant and those of each of their groups.
    """

    all_partitions = models.BooleanField(
        default=False, help_text="Every partition of the cluster, including ones added later."
    )
    partitions = models.TextField(
        blank=True, help_text="Partition names, separated by commas or spaces (ignored with all partitions)."
    )
    terminal = models.BooleanField("browser terminal allowed", default=False)
    accounts = models.TextField(
        "Slurm accounts",
        blank=True,
        help_text="Accounts jobs may be charged to besides the cluster's default account, "
        "separated by commas or spaces.",
    )
    qos = models.TextField(
        "QOS",
        blank=True,
        help_text="QOS jobs may name, separated by commas or spaces. Empty: only the default QOS.",
    )

    class Meta:
        ordering = ["cluster", "group__name", "user__username"]
        constraints = [
            models.CheckConstraint(condition=HOLDER_EXACTLY_ONE, name="grant_for_a_group_or_a_person"),
            models.UniqueConstraint(
                fields=["cluster", "group"], condition=Q(group__isnull=False), name="one_grant_per_group"
            ),
            models.UniqueConstraint(
                fields=["cluster", "user"], condition=Q(user__isnull=False), name="one_grant_per_person"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.holder_name} on {self.cluster.slug}"

    @property
    def partition_names(self) -> list[str]:
        return words(self.partitions)

    @property
    def account_names(self) -> list[str]:
        return words(self.accounts)

    @property
    def qos_names(self) -> list[str]:
        return words(self.qos)

    def clean(self) -> None:
        super().clean()
        for name, words, kind in (
            ("partitions", self.partition_names, "partition"),
            ("accounts", self.account_names, "Slurm account"),
            ("qos", self.qos_names, "QOS"),
        ):
            bad = [p for p in words if not PARTITION_NAME.match(p)]
            if bad:
                raise ValidationError({name: f"Not a {kind} name: {', '.join(bad)}."})


def words(text: str) -> list[str]:
    """The names in a grant's partitions, accounts or QOS field: separated by commas or spaces."""
    return [w for w in re.split(r"[\s,]+", text) if w]


class Quota(HeldByGroupOrPerson):
    """Limits for a group (shared by its members together) or for one person, on one cluster.

    Every empty field means "no limit". Budgets are in GPU-hours and CPU-hours of
    walltime per period; see access.quota for how periods and usage are counted.
    """

    class Period(models.TextChoices):
        DAY = "day", "Day"
        WEEK = "week", "Week"
        MONTH = "month", "Month"

    # The fields a quota change is recorded for, in the order the history shows them.
    TRACKED = (
        "cluster",
        "group",
        "user",
        "period",
        "period_anchor",
        "gpu_hours",
        "cpu_hours",
        "max_running_jobs",
        "max_queued_jobs",
        "max_nodes_per_job",
        "max_cpus_per_job",
        "max_gpus_per_job",
        "max_memory_per_job",
        "max_walltime",
        "note",
    )

    period = models.CharField(max_length=5, choices=Period.choices, default=Period.MONTH)
    period_anchor = models.DateField(
        default=date(2024, 1, 1),
        help_text="Any day a period starts on: a week starts on its weekday, a month on its day of the "
        "month (1 to 28). Days start at midnight in the console's time zone.",
    )
    gpu_hours = models.FloatField(
        "GPU-hours per period", null=True, blank=True, validators=[MinValueValidator(0)]
    )
    cpu_hours = models.FloatField(
        "CPU-hours per period", null=True, blank=True, validators=[MinValueValidator(0)]
    )
    max_running_jobs = models.PositiveIntegerField(null=True, blank=True)
    max_queued_jobs = models.PositiveIntegerField(null=True, blank=True)
    max_nodes_per_job = models.PositiveIntegerField(null=True, blank=True)
    max_cpus_per_job = models.PositiveIntegerField("max CPUs per job", null=True, blank=True)
    max_gpus_per_job = models.PositiveIntegerField("max GPUs per job", null=True, blank=True)
    max_memory_per_job = models.PositiveIntegerField(
        "max memory per job (MB)",
        null=True,
        blank=True,
        help_text="The job's whole memory: --mem times its nodes, or --mem-per-cpu times its CPUs.",
    )
    max_walltime = models.PositiveIntegerField("max walltime (minutes)", null=True, blank=True)

    class Meta:
        ordering = ["cluster", "group__name", "user__username"]
        constraints = [
            models.CheckConstraint(condition=HOLDER_EXACTLY_ONE, name="quota_for_a_group_or_a_person"),
            models.UniqueConstraint(
                fields=["cluster", "group"], condition=Q(group__isnull=False), name="one_quota_per_group"
            ),
            models.UniqueConstraint(
                fields=["cluster", "user"], condition=Q(user__isnull=False), name="one_quota_per_person"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.holder_name} on {self.cluster.slug}"

    def save(self, *args: Any, changed_by: Any = None, **kwargs: Any) -> None:
        """Save and keep the change in the quota's history (who, when, before → after)."""
        before = None
        if self.pk is not None:
            old = Quota.objects.filter(pk=self.pk).select_related("cluster", "group", "user").first()
            before = old.snapshot() if old is not None else None
        super().save(*args, **kwargs)
        after = self.snapshot()
        if before == after:
            return
        QuotaChange.write(
            self,
            QuotaChange.Kind.CREATED if before is None else QuotaChange.Kind.CHANGED,
            before or {},
            after,
            changed_by,
        )

    def delete(self, *args: Any, changed_by: Any = None, **kwargs: Any) -> Any:
        QuotaChange.write(self, QuotaChange.Kind.DELETED, self.snapshot(), {}, changed_by)
        return super().delete(*args, **kwargs)

    def clean(self) -> None:
        super().clean()
        if self.period == self.Period.MONTH and self.period_anchor and self.period_anchor.day > 28:
            # Short months would otherwise have no start day; the 28th exists in every month.
            raise ValidationError({"period_anchor": "A monthly period starts on day 1 to 28 of the month."})

    def snapshot(self) -> dict[str, Any]:
        """The tracked fields as plain JSON values, names for the holder and cluster."""
        values: dict[str, Any] = {}
        for name in self.TRACKED:
            if name == "cluster":
                values[name] = self.cluster.slug if self.cluster_id else None
            elif name == "group":
                values[name] = self.group.name if self.group_id else None
            elif name == "user":
                values[name] = self.user.get_username() if self.user_id else None
            elif name == "period_anchor":
                values[name] = self.period_anchor.isoformat() if self.period_anchor else None
            else:
                values[name] = getattr(self, name)
        return values


class QuotaChange(models.Model):
    """One change to a quota. Outlives the quota, so a deleted limit can still be explained."""

    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        CHANGED = "changed", "Changed"
        DELETED = "deleted", "Deleted"

    quota = models.ForeignKey(Quota, null=True, blank=True, on_delete=models.SET_NULL, related_name="changes")
    quota_label = models.CharField(max_length=255)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    time = models.DateTimeField(auto_now_add=True, db_index=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_by_name = models.CharField(max_length=150, blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-time", "-id"]

    def __str__(self) -> str:
        return f"{self.quota_label} {self.kind} by {self.changed_by_name or 'the system'}"

    @classmethod
    def write(cls, quota: Quota, kind: str, before: dict, after: dict, changed_by: Any) -> QuotaChange:
        person = changed_by if getattr(changed_by, "pk", None) is not None else None
        return cls.objects.create(
            quota=quota if quota.pk is not None else None,
            quota_label=str(quota)[:255],
            kind=kind,
            changed_by=person,
            changed_by_name=(person.get_username() if person else str(changed_by or ""))[:150],
            before=before,
            after=after,
        )

    @property
    def differences(self) -> list[tuple[str, Any, Any]]:
        """(field, before, after) for each field that changed, in the quota's field order."""
        names = [n for n in Quota.TRACKED if n in self.before or n in self.after]
        return [
            (n, self.before.get(n), self.after.get(n))
            for n in names
            if self.before.get(n) != self.after.get(n)
        ]


class Usage(models.Model):
    """One job in the ledger: a reservation while it is queued or running, its real use once it ended.

    Charged to the person and to every group they were in when it was written (the
    `groups` snapshot): see access.quota for why.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Reserved, waiting in the queue"
        RUNNING = "running", "Reserved, running"
        SETTLED = "settled", "Ended: real use"
        RELEASED = "released", "Released: nothing used"

    class Origin(models.TextChoices):
        CONSOLE = "console", "Submitted through the console"
        OUTSIDE = "outside", "Submitted outside the console"

    OPEN = (State.QUEUED, State.RUNNING)

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="person",
    )
    # Kept as text, so the ledger still says whose use it was after the person is deleted.
    username = models.CharField(max_length=150)
    groups = models.ManyToManyField(Group, blank=True, related_name="+")
    job_id = models.PositiveBigIntegerField("Slurm job id", null=True, blank=True)
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.CONSOLE)
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)

    partition = models.CharField(max_length=64, blank=True)
    nodes = models.PositiveIntegerField(default=1)
    cpus = models.PositiveIntegerField(default=1)
    gpus = models.PositiveIntegerField(default=0)
    time_limit = models.PositiveIntegerField("time limit (minutes)", default=0)
    reserved_gpu_hours = models.FloatField(default=0)
    reserved_cpu_hours = models.FloatField(default=0)
    # A job array is one entry for all its tasks (nodes, CPUs, GPUs and time limit above are each task's).
    # Its tasks are counted against the running- and queued-job limits as the sync loop sees them go; as
    # each task ends, its share of the reservation becomes its real use (access.ledger.task_ended).
    tasks = models.PositiveIntegerField(default=1)
    tasks_queued = models.PositiveIntegerField(default=0)
    tasks_running = models.PositiveIntegerField(default=0)

    elapsed_seconds = models.PositiveBigIntegerField(null=True, blank=True)
    used_gpu_hours = models.FloatField(default=0)
    used_cpu_hours = models.FloatField(default=0)

    created = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True, help_text="When the job ended or was released.")
    release_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = "ledger entry"
        verbose_name_plural = "ledger"
        indexes = [
            # A person's open reservations and this period's use, on one cluster.
            models.Index(fields=["cluster", "user", "state", "ended_at"], name="usage_person_state_ended"),
            models.Index(fields=["cluster", "state", "ended_at"], name="usage_cluster_state_ended"),
            models.Index(fields=["cluster", "job_id"], name="usage_cluster_job"),
        ]

    def __str__(self) -> str:
        job = f"job {self.job_id}" if self.job_id else f"reservation {self.pk}"
        return f"{self.username} on {self.cluster.slug}: {job} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN


class Publication(models.Model):
    """The policy snapshot last published to a cluster's head node, for its job_submit plugin.

    `version` moves only when the rules or the settled use change; `generated_at` moves with
    every publish, so the plugin can tell a console that stopped publishing (max age).
    """

    cluster = models.OneToOneField(Cluster, on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField(default=0)
    digest = models.CharField(max_length=64, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    people = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the last publish failed; empty when it worked.")
    # Use settled by the sync loop up to here; jobs that ended later are counted by the plugin.
    settled_through = models.DateTimeField(null=True, blank=True)
    # How far the sync loop has read the plugin's refusal log (bytes).
    refusals_read = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name = "policy publication"

    def __str__(self) -> str:
        return f"policy v{self.version} on {self.cluster.slug}"


class PolicyVersion(models.Model):
    """A counter per cluster that moves, in the same transaction, with every change of its rules.

    The rules are grants, quotas, group membership and group names (access.receivers bumps it).
    Every console process keeps the compiled rules in memory (access.held) and reads this one
    row now and then to learn whether another process changed them; see access.held for how often.
    Ledger writes do not move it: use is read again on its own, bounded clock.
    """

    cluster = models.OneToOneField(Cluster, on_delete=models.CASCADE, primary_key=True, related_name="+")
    rules = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"rules v{self.rules} on cluster {self.cluster_id}"
