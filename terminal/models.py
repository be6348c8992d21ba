"""Terminal records: each browser shell that was opened, and each cluster's terminal settings."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from clusters.models import Cluster


class TerminalPolicy(models.Model):
    """A cluster's terminal settings beyond the registry's idle timeout; no row means the defaults."""

    # One-to-one rather than fields on Cluster: the registry belongs to `clusters`, which knows no terminal.
    cluster = models.OneToOneField(Cluster, on_delete=models.CASCADE, related_name="terminal_policy")
    record = models.BooleanField(
        "record sessions",
        default=False,
        help_text="Keep an asciicast recording of every terminal's output (never its keystrokes).",
    )
    max_session_minutes = models.PositiveIntegerField(
        "maximum session length (minutes)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Empty: the console's setting CLUSTERRA_TERMINAL_MAX_MINUTES.",
    )
    resume_minutes = models.PositiveIntegerField(
        "resume window (minutes)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=(
            "How long a shell waits for its page to come back after the connection drops (a laptop asleep, "
            "a change of network); hours are fine. The idle timeout and the maximum length still apply "
            "while it waits. Empty: the console's setting CLUSTERRA_TERMINAL_RESUME_SECONDS."
        ),
    )

    class Meta:
        verbose_name = "terminal policy"
        verbose_name_plural = "terminal policies"

    def __str__(self) -> str:
        return f"Terminal policy of {self.cluster}"

    @classmethod
    def for_cluster(cls, cluster: Cluster) -> TerminalPolicy:
        """The cluster's policy, or an unsaved one with the defaults."""
        return cls.objects.filter(cluster=cluster).first() or cls(cluster=cluster)

    @property
    def max_minutes(self) -> int:
        return self.max_session_minutes or settings.CLUSTERRA_TERMINAL_MAX_MINUTES


class TerminalSession(models.Model):
    """One terminal: who, as which POSIX user, where, when, how much, and why it ended."""

    class Ended(models.TextChoices):
        CLOSED = "closed", "Closed by the person"
        SHELL_EXITED = "shell_exited", "The shell ended"
        IDLE = "idle_timeout", "Idle timeout"
        MAX_LENGTH = "max_length", "Maximum session length"
        OFFBOARDED = "offboarded", "Offboarded"
        WITHDRAWN = "withdrawn", "Terminal access withdrawn"
        DISCONNECTED = "disconnected", "The browser did not come back"
        FAILED = "failed", "Could not be opened"
        ERROR = "error", "Internal error"

    person = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="terminal_sessions"
    )
    # Kept as text too: the record must still say who and where after a person or cluster is deleted.
    person_name = models.CharField(max_length=150)
    cluster = models.ForeignKey(
        Cluster, null=True, on_delete=models.SET_NULL, related_name="terminal_sessions"
    )
    cluster_slug = models.CharField(max_length=50)
    posix_user = models.CharField("POSIX user", max_length=32)
    transport = models.CharField(max_length=8, choices=Cluster.Transport.choices)
    transport_session_id = models.CharField("transport session id", max_length=128, blank=True)
    cwd = models.CharField("working directory asked for", max_length=1024, blank=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)

    started = models.DateTimeField(default=timezone.now, db_index=True)
    ended = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField("why it ended", max_length=16, choices=Ended.choices, blank=True)
    end_message = models.TextField("what the person was told", blank=True)

    bytes_in = models.BigIntegerField("keystroke bytes", default=0)
    bytes_out = models.BigIntegerField("output bytes", default=0)
    # A path under the recordings folder, or an s3:// URL; empty when the cluster does not record.
    recording = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-started", "-id"]

    def __str__(self) -> str:
        return f"{self.posix_user}@{self.cluster_slug} {self.started:%Y-%m-%d %H:%M}"

    @property
    def is_open(self) -> bool:
        return self.ended is None

    @property
    def duration(self) -> timedelta | None:
        return (self.ended - self.started) if self.ended else None
