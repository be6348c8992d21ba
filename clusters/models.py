"""The cluster registry: a cluster is described by data, never by code."""

from __future__ import annotations

import posixpath
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from clusters import tokens
from clusters.slurm import SUPPORTED_VERSIONS, SlurmClient
from prepared import Prepared, fields_of, instance

# An IAM role ARN in any partition (aws, aws-cn, aws-us-gov), with an optional path.
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")


def validate_role_arn(value: str) -> None:
    if value and not _ROLE_ARN.fullmatch(value):
        raise ValidationError(f"{value!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>).")


def validate_roots(value: str) -> None:
    for line in value.splitlines():
        root = line.strip()
        if not root:
            continue
        if not root.startswith("/") or posixpath.normpath(root) != root or "\x00" in root:
            raise ValidationError(f"{root!r} is not an absolute, normalised path.")


class Cluster(models.Model):
    class KeySource(models.TextChoices):
        FILE = "file", "File on the console host"
        ENV = "env", "Environment variable (base64)"
        AWS_SECRET = "aws_secret", "AWS Secrets Manager secret"

    class Algorithm(models.TextChoices):
        HS256 = "HS256", "HS256 (slurm.conf jwt_key)"
        RS256 = "RS256", "RS256 (slurm.conf jwks)"

    class Transport(models.TextChoices):
        LOCAL = "local", "Local (the console runs on the head node)"
        SSM = "ssm", "AWS SSM Session Manager"

    slug = models.SlugField(unique=True, help_text="Short name used in URLs, the API and the CLI.")
    name = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)

    slurmrestd_url = models.URLField("slurmrestd URL", help_text="e.g. http://127.0.0.1:6820")
    api_version = models.CharField(
        "API version",
        max_length=10,
        blank=True,
        choices=[("", "Auto-detect (highest offered)")] + [(v, v) for v in SUPPORTED_VERSIONS],
    )
    has_accounting = models.BooleanField(
        default=True, help_text="slurmdbd is configured: user associations are created on provisioning."
    )
    slurm_account = models.CharField(
        max_length=64, default="demo", help_text="Default Slurm account for new user associations."
    )
    slurm_user = models.CharField(
        max_length=32, default="slurm", help_text="SlurmUser: no token is ever minted for it, nor for root."
    )
    service_user = models.CharField(
        max_length=32,
        default="clusterra",
        help_text="An unprivileged account the console reads partitions and nodes as.",
    )

    jwt_key_source = models.CharField(
        "JWT key source", max_length=12, choices=KeySource.choices, default=KeySource.FILE
    )
    jwt_key_ref = models.CharField(
        "JWT key reference",
        max_length=512,
        help_text="A file path, an environment variable's name, or a secret's name or ARN.",
    )
    jwt_algorithm = models.CharField(
        "JWT algorithm", max_length=5, choices=Algorithm.choices, default=Algorithm.HS256
    )
    jwt_key_id = models.CharField("JWT key id (kid)", max_length=128, blank=True)
    jwt_include_ids = models.BooleanField(
        "Put uid/gid in tokens", default=False, help_text="AWS PCS requires uid, gid and id claims."
    )
    token_lifetime = models.PositiveIntegerField(
        "token lifetime (seconds)",
        default=300,
        validators=[MinValueValidator(30), MaxValueValidator(3600)],
    )

    transport = models.CharField(max_length=8, choices=Transport.choices, default=Transport.LOCAL)
    ssm_instance_id = models.CharField("SSM instance id", max_length=32, blank=True)
    aws_region = models.CharField("AWS region", max_length=32, blank=True)
    ssm_role_arn = models.CharField(
        "role ARN", max_length=256, blank=True, help_text="Assumed with the console's web identity."
    )
    ssm_person_role_arn = models.CharField(
        "per-person terminal role ARN",
        max_length=256,
        blank=True,
        validators=[validate_role_arn],
        help_text="SSM only. Each terminal's session is opened with this role, assumed for the person "
        "(session name clusterra-<POSIX user>, source identity their e-mail) so CloudTrail names them. "
        "Empty: the cluster's role (or the console's own credentials) opens every session.",
    )

    allowed_script_roots = models.TextField(
        default="/home",
        validators=[validate_roots],
        help_text="One absolute path per line; job scripts must live under one of them.",
    )
    home_root = models.CharField(max_length=200, default="/home", validators=[validate_roots])
    slurm_bin = models.CharField(
        "Slurm commands folder",
        max_length=255,
        blank=True,
        help_text="Where sbatch, sacct, sacctmgr and scontrol are on the head node when they are not on the "
        "default PATH (AWS ParallelCluster: /opt/slurm/bin). Empty: found on the PATH.",
    )
    offboard_jobs = models.CharField(
        "jobs of an offboarded person",
        max_length=8,
        choices=[("leave", "Leave them running"), ("cancel", "Cancel them")],
        # Someone who left should not go on using the cluster through jobs queued the day before.
        default="cancel",
    )
    enforce_policy = models.BooleanField(
        "Slurm enforces the policy",
        default=False,
        help_text="Publish the policy to the head node for the job_submit plugin (install it first: README, "
        "'Slurm enforces the policy'). Then sbatch, srun and salloc from any shell obey the same rules.",
    )
    policy_path = models.CharField(
        "policy file on the head node", max_length=255, default="/etc/slurm/clusterra/policy.lua"
    )
    refusal_log = models.CharField(
        "plugin refusal log on the head node", max_length=255, default="/var/log/slurm/clusterra-refusals.log"
    )
    policy_max_age = models.PositiveIntegerField(
        "policy max age (minutes)",
        default=1440,
        validators=[MinValueValidator(5)],
        help_text="A snapshot older than this (the console stopped publishing) is stale.",
    )
    policy_when_stale = models.CharField(
        "when the policy is stale",
        max_length=6,
        choices=[("closed", "Refuse console accounts' jobs"), ("open", "Let them through, with a warning")],
        default="closed",
    )
    terminal_idle_timeout = models.PositiveIntegerField(
        "terminal idle timeout (minutes)", default=20, validators=[MinValueValidator(1)]
    )
    # Caps on one person's shells together, where the head node is the console's own host (the local
    # transport): a fork bomb or a memory hog then stays in that person's cgroup (terminal.confine).
    shell_max_processes = models.PositiveIntegerField(
        "processes per person's shells",
        default=512,
        validators=[MinValueValidator(16)],
        help_text="Local head node only: every process of one person's terminals, together.",
    )
    shell_max_memory_mb = models.PositiveIntegerField(
        "memory per person's shells (MB)",
        default=4096,
        validators=[MinValueValidator(64)],
        help_text="Local head node only: above this the biggest process of their shells is killed.",
    )
    shell_max_cpus = models.FloatField(
        "CPUs per person's shells",
        default=1.0,
        validators=[MinValueValidator(0.05)],
        help_text="Local head node only: a cap, and shells yield to the console when the CPU is busy.",
    )

    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.transport == self.Transport.SSM and not (self.ssm_instance_id and self.aws_region):
            raise ValidationError("The SSM transport needs an instance id and a region.")
        if self.jwt_key_source == self.KeySource.AWS_SECRET and not self.aws_region:
            raise ValidationError({"aws_region": "A Secrets Manager key needs the secret's region."})
        if self.ssm_person_role_arn and self.transport != self.Transport.SSM:
            raise ValidationError(
                {"ssm_person_role_arn": "A per-person terminal role only applies to the SSM transport."}
            )

    @property
    def script_roots(self) -> list[str]:
        return [line.strip() for line in self.allowed_script_roots.splitlines() if line.strip()]

    def slurm(self, user_name: str, *, uid: int | None = None, gid: int | None = None) -> SlurmClient:
        """A slurmrestd client acting as `user_name`, with a freshly minted (or cached) token.

        Whether this person may have a token at all is decided above this app
        (accounts); here only the cluster's own refusals apply (root, SlurmUser).
        """
        return SlurmClient(
            self.slurmrestd_url,
            user_name=user_name,
            token=tokens.mint(self, user_name, uid=uid, gid=gid),
            api_version=self.api_version or None,
            timeout=(settings.SLURM_CONNECT_TIMEOUT, settings.SLURM_READ_TIMEOUT),
        )

    def service_slurm(self) -> SlurmClient:
        """A client for cluster-wide reads (partitions, nodes, ping) as the unprivileged service user."""
        return self.slurm(self.service_user)


# Nearly every page and /v1 call names its cluster by slug: the query is compiled once (prepared).
_BY_SLUG = Prepared(lambda slug: Cluster.objects.filter(slug=slug).values(*fields_of(Cluster)), str)


def cluster_by_slug(slug: str) -> Cluster | None:
    """The cluster whose slug this is, or None."""
    rows = _BY_SLUG.rows(slug)
    return instance(Cluster, rows[0]) if rows else None


# The dashboard lists them on every visit.
_ENABLED = Prepared(
    lambda: Cluster.objects.filter(enabled=True).order_by("name", "pk").values(*fields_of(Cluster))
)


def enabled_clusters() -> list[Cluster]:
    """The clusters turned on in the console, by name."""
    return [instance(Cluster, row) for row in _ENABLED.rows()]
