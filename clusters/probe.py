"""A cluster's live state as the console sees it: reachable or not, and its partitions and nodes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from clusters import tokens
from clusters.models import Cluster
from clusters.slurm import ClusterInfo, Node, Partition, SlurmError


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
