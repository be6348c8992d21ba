"""clusters.partitions: the default partition, from the head node where slurmrestd does not say which."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from clusters import headnode, partitions
from clusters.headnode import HeadNodeError, Result
from clusters.models import Cluster
from clusters.slurm import Partition

# What `scontrol -o show partition` prints, one line a partition (Slurm 24.11.5, trimmed).
SHOWN = (
    "PartitionName=cpu AllowGroups=ALL Default=NO QoS=N/A DefaultTime=NONE Nodes=localhost\n"
    "PartitionName=gpu AllowGroups=ALL Default=YES QoS=N/A DefaultTime=NONE Nodes=localhost\n"
)


@pytest.fixture
def cluster(monkeypatch) -> Cluster:
    """A cluster whose slurmrestd speaks v0.0.42: partitions come back with is_default None."""
    here = Cluster(pk=7, slug="c", name="C", slurmrestd_url="http://127.0.0.1:9")
    listed = [Partition("cpu"), Partition("gpu")]
    monkeypatch.setattr(Cluster, "service_slurm", lambda self: SimpleNamespace(partitions=lambda: listed))
    partitions.forget()
    yield here
    partitions.forget()


def test_the_head_node_says_which_partition_is_the_default_and_is_asked_once(cluster, monkeypatch):
    asked = []

    def run(c, argv, **kwargs):
        asked.append(list(argv))
        return Result(0, SHOWN, "")

    monkeypatch.setattr(headnode, "run", run)
    found = partitions.partitions(cluster)
    assert [(p.name, p.is_default) for p in found] == [("cpu", False), ("gpu", True)]
    assert partitions.default(cluster).name == "gpu"
    monkeypatch.setattr(partitions, "CACHE_SECONDS", 0)  # the partitions are read again, the default is not
    partitions.partitions(cluster)
    assert asked == [["scontrol", "-o", "show", "partition"]]


def test_a_head_node_that_cannot_say_leaves_the_default_unknown(cluster, monkeypatch):
    def unreachable(c, argv, **kwargs):
        raise HeadNodeError(c, "connection refused")

    monkeypatch.setattr(headnode, "run", unreachable)
    assert [p.is_default for p in partitions.partitions(cluster)] == [None, None]
    assert partitions.default(cluster).name == "cpu"  # the first, as before


def test_a_version_that_says_is_taken_at_its_word(cluster, monkeypatch):
    listed = [Partition("cpu", is_default=False), Partition("debug", is_default=True)]
    monkeypatch.setattr(Cluster, "service_slurm", lambda self: SimpleNamespace(partitions=lambda: listed))
    monkeypatch.setattr(headnode, "run", lambda *a, **k: pytest.fail("the head node was asked"))
    assert partitions.default(cluster).name == "debug"
