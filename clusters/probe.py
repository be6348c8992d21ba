"""A cluster's live state as the console sees it: reachable or not, and its partitions and nodes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from clusters import tokens
from clusters.models import Cluster
from clusters.slurm import ClusterInfo, Node, Partition, SlurmError

# How long /healthz shows a cluster's last probe: polling it (a dashboard, a script in a loop) costs
# slurmrestd one ping per cluster and process every few seconds, not one per request.
RECENT_SECONDS = 5.0
_clock: Callable[[], float] = time.monotonic
# Cluster id → (its `updated` when probed, when, the probe): an edited cluster is probed afresh.
_recent: dict[int, tuple[datetime, float, Probe]] = {}


@dataclass
class Probe:
    cluster: Cluster
    ok: bool
    summary: str
    info: ClusterInfo | None = None
    partitions: list[Partition] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    millis: int = 0


def check(cluster: Cluster, *, detail: bool = True) -> Probe:
    """Ping slurmrestd as the service user and, with `detail`, read partitions and nodes.

    Never raises for a cluster that is down or misconfigured: the caller shows the
    sentence, because a health page that crashes on the broken cluster hides the others.
    """
    started = time.monotonic()
    try:
        client = cluster.service_slurm()
        info = client.info()
        partitions = client.partitions() if detail else []
        nodes = client.nodes() if detail else []
    except (SlurmError, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        millis = int((time.monotonic() - started) * 1000)
        return Probe(cluster, False, str(e), millis=millis)
    millis = int((time.monotonic() - started) * 1000)
    summary = f"slurmrestd {info.api_version} on Slurm {info.slurm_release} answered in {millis} ms"
    if detail:
        summary += f"; {len(partitions)} partitions, {len(nodes)} nodes"
    return Probe(cluster, True, summary + ".", info, partitions, nodes, millis)


def recent(cluster: Cluster) -> Probe:
    """check(cluster, detail=False), or this process's answer to it from the last RECENT_SECONDS."""
    now = _clock()
    kept = _recent.get(cluster.pk)
    if kept is not None and kept[0] == cluster.updated and now - kept[1] < RECENT_SECONDS:
        return kept[2]
    result = check(cluster, detail=False)
    _recent[cluster.pk] = (cluster.updated, now, result)
    return result
