"""A cluster's partitions and nodes as the service user reads them, briefly cached, counted per state.

Every submit needs the partition list (the default partition, its time limits) and
every dashboard view needs nodes too; slurmrestd answers in milliseconds, but a
page of many clusters, or a burst of submits, should not ask the same thing again
within seconds. The cache is per process and short, so an admin's change to a
partition shows up almost at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from clusters.models import Cluster
from clusters.slurm import Node, Partition

CACHE_SECONDS = 15.0

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


def _cached(cluster: Cluster, what: str, read):
    key = (f"{cluster.pk}:{cluster.slurmrestd_url}", what)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < CACHE_SECONDS:
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
    return _cached(cluster, "partitions", lambda: cluster.service_slurm().partitions())


def nodes(cluster: Cluster) -> list[Node]:
    return _cached(cluster, "nodes", lambda: cluster.service_slurm().nodes())


def find(cluster: Cluster, name: str) -> Partition | None:
    return next((p for p in partitions(cluster) if p.name == name), None)


def default(cluster: Cluster) -> Partition | None:
    """Slurm's default partition (Default=YES), or the first one when the API version does not say."""
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
