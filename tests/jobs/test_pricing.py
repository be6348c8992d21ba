"""jobs.pricing: the policy prices what a job really asks for, whichever sbatch form it uses."""

from __future__ import annotations

import pytest

from clusters.slurm import JobSpec, Partition
from jobs import pricing

GPU = Partition("gpu", total_nodes=4, total_cpus=256)


def priced(**fields):
    spec = JobSpec("#!/bin/sh\n", "/tmp", partition="gpu", time_limit=60, **fields)
    resources, sources = pricing.price(spec, GPU, fields.get("array"))
    return resources, sources


@pytest.mark.parametrize(
    ("fields", "nodes", "cpus", "gpus", "memory"),
    [
        ({}, 1, 1, 0, 0),
        ({"ntasks": 4, "cpus_per_task": 2}, 1, 8, 0, 0),
        ({"nodes": 2, "tasks_per_node": 8, "cpus_per_task": 4}, 2, 64, 0, 0),
        ({"nodes": 2, "max_nodes": 4, "tasks_per_node": 2}, 4, 8, 0, 0),
        ({"nodes": 2}, 2, 2, 0, 0),
        ({"gpus": "a100:4", "cpus_per_gpu": 8}, 1, 32, 4, 0),
        ({"nodes": 2, "gpus_per_node": "4"}, 2, 2, 8, 0),
        ({"nodes": 2, "gres": "gpu:a100:2"}, 2, 2, 4, 0),
        ({"nodes": 2, "tasks_per_node": 4, "gpus_per_task": "1"}, 2, 8, 8, 0),
        ({"ntasks": 3, "gpus_per_task": "2"}, 1, 3, 6, 0),
        ({"sockets_per_node": 2, "gpus_per_socket": "1", "nodes": 2}, 2, 2, 4, 0),
        ({"gpus": "2", "tasks_per_gpu": 3}, 1, 6, 2, 0),
        ({"nodes": 3, "min_cpus_per_node": 16}, 3, 48, 0, 0),
        ({"nodes": 2, "exclusive": "exclusive"}, 2, 128, 0, 0),
        ({"nodes": 2, "memory_per_node": 4096}, 2, 2, 0, 8192),
        ({"ntasks": 8, "memory_per_cpu": 1000}, 1, 8, 0, 8000),
        ({"gpus": "2", "memory_per_gpu": 40960}, 1, 1, 2, 81920),
    ],
)
def test_every_form_is_priced_as_slurm_allocates_it(fields, nodes, cpus, gpus, memory):
    resources, _ = priced(**fields)
    assert (resources.nodes, resources.cpus, resources.gpus, resources.memory_mb) == (
        nodes,
        cpus,
        gpus,
        memory,
    )


def test_the_sources_name_the_options_each_number_came_from():
    _, sources = priced(nodes=2, tasks_per_node=8, gpus_per_task="1", memory_per_cpu=100)
    assert sources["priced_cpus"] == "--nodes x --ntasks-per-node x --cpus-per-task"
    assert sources["priced_gpus"] == "--gpus-per-task x tasks"
    assert sources["priced_memory"] == "--mem-per-cpu x CPUs"


def test_an_exclusive_job_is_priced_for_whole_nodes_only_when_that_is_more():
    resources, sources = priced(nodes=1, exclusive="user", ntasks=100)
    assert resources.cpus == 100
    resources, sources = priced(nodes=1, exclusive="user", ntasks=2)
    assert resources.cpus == 64
    assert sources["priced_cpus"] == "--exclusive: 1 whole node(s) of gpu"


def test_an_array_is_priced_per_task_times_its_tasks_with_its_throttle():
    resources, sources = priced(array="0-99%10", ntasks=2, gpus="1")
    assert (resources.tasks, resources.at_once, resources.cpus, resources.gpus) == (100, 10, 2, 1)
    # 100 tasks x 1 GPU x 1 hour, the whole array's worst case.
    assert resources.gpu_hours == 100
    assert sources["priced_array"] == "--array=0-99%10: 100 tasks, up to 10 at once"
