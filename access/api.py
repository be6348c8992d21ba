"""The /v1 routes that say what you may use: you (/me), the clusters, their partitions, your quotas.

Each answer is the policy's (which clusters let you in, which partitions are granted), so the
routes live here, where the policy is, rather than in accounts or clusters below it.
"""

from __future__ import annotations

from typing import Any, Literal

from django.http import HttpRequest
from ninja import Field, Router, Schema

from access import policy, refusals
from accounts.api import ClusterId, answers, cluster_or_404
from accounts.models import posix_account_of
from clusters import models, partitions, tokens
from clusters.refusal import Refusal
from clusters.slurm import SlurmError

router = Router()


class PosixAccount(Schema):
    """The Linux account the console made for you."""

    username: str = Field(description="POSIX name.")
    uid: int = Field(description="UID.")
    gid: int = Field(description="GID.")


class Me(Schema):
    username: str = Field(description="The console user name.")
    email: str = Field(description="E-mail address.")
    name: str = Field(description="Full name.")
    is_staff: bool
    posix_account: PosixAccount | None = Field(
        description="The Linux account the console made for you (null until the first use of a cluster)."
    )
    clusters: list[str] = Field(description="Slugs of the clusters you may use.")


class Cluster(Schema):
    id: str = Field(description="The slug used in URLs.")
    name: str = Field(description="Display name.")
    granted_partitions: list[str] = Field(description="Partitions you may submit to; `*` means all of them.")
    terminal_url: str = Field(description="The browser terminal page.")
    partitions_url: str = Field(description="API URL of its partitions.")
    jobs_url: str = Field(description="API URL of your jobs there.")
    quota_url: str = Field(description="API URL of your quotas there.")


class ClusterList(Schema):
    clusters: list[Cluster]


class Counts(Schema):
    total: int
    idle: int
    allocated: int


class NodeCounts(Counts):
    other: int = Field(description="Down or drained.")


class Partition(Schema):
    name: str = Field(description="Partition name.")
    state: str = Field(description="Slurm's state, e.g. UP.")
    default: bool = Field(description="Slurm's default partition.")
    granted: bool = Field(description="You may submit to it.")
    max_time_limit: int | None = Field(description="MaxTime in minutes (null: unlimited).")
    default_time_limit: int | None = Field(description="DefaultTime in minutes.")
    nodes: NodeCounts
    cpus: Counts
    gpus: Counts


class PartitionList(Schema):
    cluster: str = Field(description="The cluster.")
    partitions: list[Partition]


class Quota(Schema):
    scope: str = Field(description="Whose quota: `you` or `group NAME`.")
    quota_id: int | None = Field(description="The quota's id.")
    period: Literal["day", "week", "month"] = Field(description="day, week or month.")
    period_start: str = Field(
        description="When the current period started.", json_schema_extra={"format": "date-time"}
    )
    renews: str = Field(description="When the next period starts.", json_schema_extra={"format": "date-time"})
    gpu_hours_limit: float | None = Field(description="GPU-hours limit.")
    gpu_hours_used: float = Field(description="GPU-hours used.")
    gpu_hours_reserved: float = Field(description="GPU-hours reserved.")
    gpu_hours_left: float | None = Field(description="GPU-hours left.")
    cpu_hours_limit: float | None = Field(description="CPU-hours limit.")
    cpu_hours_used: float = Field(description="CPU-hours used.")
    cpu_hours_reserved: float = Field(description="CPU-hours reserved.")
    cpu_hours_left: float | None = Field(description="CPU-hours left.")
    max_running_jobs: int | None = Field(description="Limit of running jobs.")
    running_jobs: int = Field(description="Running jobs now.")
    max_queued_jobs: int | None = Field(description="Limit of queued jobs.")
    queued_jobs: int = Field(description="Queued jobs now.")
    max_nodes_per_job: int | None = Field(description="Per-job node limit.")
    max_cpus_per_job: int | None = Field(description="Per-job CPU limit.")
    max_gpus_per_job: int | None = Field(description="Per-job GPU limit.")
    max_memory_per_job: int | None = Field(description="Per-job memory limit in MB.")
    max_walltime: int | None = Field(description="Per-job walltime limit in minutes.")


class QuotaList(Schema):
    cluster: str = Field(description="The cluster.")
    quotas: list[Quota]


def _may_view(person: Any, cluster: models.Cluster) -> bool:
    return policy.decide(person, "cluster.view", cluster).allowed


def _viewable(request: HttpRequest, slug: str) -> models.Cluster:
    cluster = cluster_or_404(slug)
    decision = policy.decide(request.user, "cluster.view", cluster)
    if not decision.allowed:
        refusals.record(request.user, cluster, decision, request=request)
        raise Refusal(decision.message, code=decision.code, status=403)
    return cluster


@router.get(
    "/me",
    url_name="v1-me",
    operation_id="getMe",
    summary="Who the token belongs to",
    tags=["people"],
    **answers({200: (Me, "The person, their POSIX account (once made) and the clusters they may use.")}, 401),
)
def me(request: HttpRequest) -> dict[str, Any]:
    person = request.user
    return {
        "username": person.get_username(),
        "email": person.email,
        "name": person.get_full_name(),
        "is_staff": person.is_staff,
        "posix_account": posix_account_of(person),
        "clusters": [c.slug for c in models.enabled_clusters() if _may_view(person, c)],
    }


@router.get(
    "/clusters",
    url_name="v1-clusters",
    operation_id="listClusters",
    summary="The clusters you may use",
    tags=["clusters"],
    **answers({200: (ClusterList, "Enabled clusters where the policy lets you in.")}, 401),
)
def list_clusters(request: HttpRequest) -> dict[str, Any]:
    usable = [c for c in models.enabled_clusters() if _may_view(request.user, c)]
    return {
        "clusters": [
            {
                "id": c.slug,
                "name": c.name,
                "granted_partitions": policy.granted_partitions(request.user, c),
                "terminal_url": f"/clusters/{c.slug}/terminal/",
                "partitions_url": f"/v1/clusters/{c.slug}/partitions",
                "jobs_url": f"/v1/clusters/{c.slug}/jobs",
                "quota_url": f"/v1/clusters/{c.slug}/quota",
            }
            for c in usable
        ]
    }


@router.get(
    "/clusters/{slug:id}/partitions",
    url_name="v1-partitions",
    operation_id="listPartitions",
    summary="Partitions, their state and what their nodes are doing",
    tags=["clusters"],
    **answers(
        {
            200: (
                PartitionList,
                "Each partition, whether you may submit to it, and idle / allocated nodes, CPUs and GPUs.",
            )
        },
        401,
        403,
        404,
        502,
    ),
)
def list_partitions(request: HttpRequest, id: ClusterId) -> dict[str, Any]:
    cluster = _viewable(request, id)
    try:
        known = [p.name for p in partitions.partitions(cluster)]
        granted = policy.granted_partitions(request.user, cluster, known)
        views = partitions.views(cluster, granted)
    except (SlurmError, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        raise Refusal(f"{cluster.name} did not answer: {e}", code="cluster_unavailable", status=502) from None
    return {"cluster": cluster.slug, "partitions": [v.as_dict() for v in views]}


@router.get(
    "/clusters/{slug:id}/quota",
    url_name="v1-quota",
    operation_id="getQuota",
    summary="Your quotas and budgets on the cluster",
    tags=["clusters"],
    **answers(
        {
            200: (
                QuotaList,
                "Every quota that applies to you (yours, then your groups'), with use and what is left.",
            )
        },
        401,
        403,
        404,
    ),
)
def quota(request: HttpRequest, id: ClusterId) -> dict[str, Any]:
    cluster = _viewable(request, id)
    quotas = policy.quota_status(request.user, cluster)
    return {"cluster": cluster.slug, "quotas": [q.as_json() for q in quotas]}
