"""A cluster's partitions and nodes as the service user reads them, briefly cached, counted per state.

Every submit needs the partition list (the default partition, its time limits) and
every dashboard view needs nodes too; slurmrestd answers in milliseconds, but a
page of many clusters, or a burst of submits, should not ask the same thing again
within seconds. The cache is per process and short, so an admin's change to a
partition shows up almost at once.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from dataclasses import dataclass

from clusters import headnode
from clusters.models import Cluster
from clusters.slurm import Node, Partition

log = logging.getLogger(__name__)

CACHE_SECONDS = 15.0
# Which partition is the default changes only when an admin edits slurm.conf: asked of the head node
# (where slurmrestd does not say) once in this long, so a page view seldom waits on an SSM round trip.
DEFAULT_CACHE_SECONDS = 300.0

_cache: dict[tuple[str, str], tuple[float, object]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class PartitionView:
    """One partition for a person: Slurm's facts plus what its nodes are doing now."""

    partition: Partition
    nodes_total: int
    nodes_idle: int
    nodes_allocated: int
    nodes_other: int
    cpus_total: int
    cpus_allocated: int
    gpus_total: int
    gpus_allocated: int
    granted: bool = True

    @property
    def name(self) -> str:
        return self.partition.name

    @property
    def gpus_idle(self) -> int:
        return max(0, self.gpus_total - self.gpus_allocated)

    @property
    def cpus_idle(self) -> int:
        return max(0, self.cpus_total - self.cpus_allocated)

    def as_dict(self) -> dict[str, object]:
        p = self.partition
        return {
            "name": p.name,
            "state": p.state,
            "default": bool(p.is_default),
            "granted": self.granted,
            "max_time_limit": p.max_time_limit,
            "default_time_limit": p.default_time_limit,
            "nodes": {
                "total": self.nodes_total,
                "idle": self.nodes_idle,
                "allocated": self.nodes_allocated,
                "other": self.nodes_other,
            },
            "cpus": {"total": self.cpus_total, "idle": self.cpus_idle, "allocated": self.cpus_allocated},
            "gpus": {"total": self.gpus_total, "idle": self.gpus_idle, "allocated": self.gpus_allocated},
        }


def _cached(cluster: Cluster, what: str, read, seconds: float = CACHE_SECONDS):
    key = (f"{cluster.pk}:{cluster.slurmrestd_url}", what)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < seconds:
            return hit[1]
    value = read()
    with _lock:
        _cache[key] = (time.monotonic(), value)
    return value


def forget() -> None:
    """Drop everything cached (tests; after a cluster's configuration changed)."""
    with _lock:
        _cache.clear()


def partitions(cluster: Cluster) -> list[Partition]:
    """The cluster's partitions; raises SlurmError (and token errors) when slurmrestd does not answer."""
    return _cached(
        cluster, "partitions", lambda: _with_default(cluster, cluster.service_slurm().partitions())
    )


def _with_default(cluster: Cluster, found: list[Partition]) -> list[Partition]:
    """The partitions with the default marked, asking the head node when slurmrestd does not say.

    slurmrestd v0.0.40 … v0.0.44 have no partition flags (Slurm 24.11 speaks v0.0.42 at most: seen on
    24.11.5), so is_default comes back None for every partition; v0.0.38 (22.05) and v0.0.45 (26.05) say.
    Without it the submit form would preselect a partition for someone the default is open to (their
    script's --partition would then lose to it) and a job that names none would be priced on the first.
    """
    if not found or any(p.is_default is not None for p in found):
        return found
    name = _cached(cluster, "default", lambda: _default_on_head_node(cluster), DEFAULT_CACHE_SECONDS)
    if name not in {p.name for p in found}:
        return found  # the head node could not say, or names a partition slurmrestd does not list
    return [dataclasses.replace(p, is_default=p.name == name) for p in found]


_DEFAULT_YES = re.compile(r"^PartitionName=(\S+) .*\bDefault=YES\b", re.M)


def _default_on_head_node(cluster: Cluster) -> str | None:
    """The partition `scontrol show partition` marks Default=YES, or None when the head node does not say."""
    try:
        shown = headnode.run(cluster, ["scontrol", "-o", "show", "partition"], timeout=15)
    except headnode.HeadNodeError as e:
        log.warning("default partition of %s: %s", cluster.slug, e)
        return None
    if not shown.ok:
        log.warning("default partition of %s: scontrol said %s", cluster.slug, shown.output())
        return None
    match = _DEFAULT_YES.search(shown.stdout)
    return match[1] if match else None


def nodes(cluster: Cluster) -> list[Node]:
    return _cached(cluster, "nodes", lambda: cluster.service_slurm().nodes())


def find(cluster: Cluster, name: str) -> Partition | None:
    return next((p for p in partitions(cluster) if p.name == name), None)


def default(cluster: Cluster) -> Partition | None:
    """Slurm's default partition (Default=YES); the first one when nothing says which it is."""
    found = partitions(cluster)
    return next((p for p in found if p.is_default), found[0] if found else None)


# Node states in which a node runs nothing and takes no work.
_UNAVAILABLE = {"DOWN", "ERROR", "FUTURE", "UNKNOWN"}
_UNAVAILABLE_FLAGS = {"DRAIN", "DRAINED", "DRAINING", "NOT_RESPONDING", "MAINTENANCE", "RESERVED"}


def views(cluster: Cluster, granted: list[str] | None = None) -> list[PartitionView]:
    """Each partition with its nodes counted: idle, allocated (fully or partly), and unavailable."""
    found = partitions(cluster)
    all_nodes = nodes(cluster)
    result = []
    for partition in found:
        members = [n for n in all_nodes if partition.name in n.partitions]
        idle = allocated = other = 0
        for node in members:
            if node.state in _UNAVAILABLE or _UNAVAILABLE_FLAGS & set(node.state_flags):
                other += 1
            elif node.state in ("ALLOCATED", "MIXED") or (node.alloc_cpus or 0) > 0:
                allocated += 1
            else:
                idle += 1
        result.append(
            PartitionView(
                partition=partition,
                nodes_total=partition.total_nodes if partition.total_nodes is not None else len(members),
                nodes_idle=idle,
                nodes_allocated=allocated,
                nodes_other=other,
                cpus_total=sum(n.cpus or 0 for n in members),
                cpus_allocated=sum(n.alloc_cpus or 0 for n in members),
                gpus_total=sum(n.gpus for n in members),
                gpus_allocated=sum(n.gpus_used for n in members),
                granted=granted is None or partition.name in granted,
            )
        )
    return result
