"""What a job really asks for, in the policy's terms: nodes, CPUs, GPUs and memory from every sbatch form.

The policy (access.policy) and Slurm's job_submit plugin price the same four numbers; this module reads
them off the final JobSpec the way Slurm allocates, so a job cannot look cheap by asking through a form
the console does not count (`--ntasks-per-node` instead of `--ntasks`, `--gpus-per-task` instead of
`--gpus`). Where Slurm may give more than the request says (a node range, `--exclusive`), the price is
the most the job can hold. `sources` says, per number, which options it came from, for the preview.
"""

from __future__ import annotations

import math

from access import policy
from clusters.slurm import JobSpec, Partition
from jobs.sbatch_options import gpu_count, gres_gpus


def price(spec: JobSpec, partition: Partition, array: str | None) -> tuple[policy.Resources, dict[str, str]]:
    sources: dict[str, str] = {}
    nodes = spec.max_nodes or spec.nodes or 1
    sources["priced_nodes"] = "--nodes (the most it may get)" if spec.max_nodes else "--nodes"

    gpus, gpu_words = _gpus(spec, nodes)
    sources["priced_gpus"] = gpu_words

    tasks = spec.ntasks
    task_words = "--ntasks"
    if tasks is None and spec.tasks_per_node:
        tasks, task_words = nodes * spec.tasks_per_node, "--nodes x --ntasks-per-node"
    if tasks is None and spec.tasks_per_gpu and gpus:
        tasks, task_words = gpus * spec.tasks_per_gpu, "GPUs x --ntasks-per-gpu"
    # Slurm starts one task per node when no task count is given, each with cpus_per_task CPUs.
    per_task = spec.cpus_per_task or 1
    cpus = max(tasks or nodes, nodes) * per_task
    cpu_words = f"{task_words} x --cpus-per-task" if tasks else "one task per node x --cpus-per-task"
    if spec.cpus_per_gpu and gpus * spec.cpus_per_gpu > cpus:
        cpus, cpu_words = gpus * spec.cpus_per_gpu, "GPUs x --cpus-per-gpu"
    if spec.min_cpus_per_node and nodes * spec.min_cpus_per_node > cpus:
        cpus, cpu_words = nodes * spec.min_cpus_per_node, "--nodes x --mincpus"
    if spec.exclusive:
        whole = nodes * _cpus_per_node(partition)
        if whole > cpus:
            # An exclusive job holds every CPU of its nodes, used or not.
            cpus, cpu_words = whole, f"--exclusive: {nodes} whole node(s) of {partition.name}"
    sources["priced_cpus"] = cpu_words

    memory = 0
    if spec.memory_per_node:
        memory, sources["priced_memory"] = spec.memory_per_node * nodes, "--mem x nodes"
    elif spec.memory_per_cpu:
        memory, sources["priced_memory"] = spec.memory_per_cpu * cpus, "--mem-per-cpu x CPUs"
    elif spec.memory_per_gpu and gpus:
        memory, sources["priced_memory"] = spec.memory_per_gpu * gpus, "--mem-per-gpu x GPUs"

    resources = policy.Resources(
        partition=partition.name,
        nodes=nodes,
        cpus=cpus,
        gpus=gpus,
        time_limit=spec.time_limit or 0,
        memory_mb=memory,
        account=spec.account or "",
        qos=spec.qos or "",
        # Resources reads the array's tasks and throttle from the expression (access.arrays).
        array=array or "",
    )
    if array:
        tasks, at_once = resources.tasks, resources.at_once
        sources["priced_array"] = f"--array={array}: {tasks} tasks, up to {at_once} at once"
    return resources, sources


def _gpus(spec: JobSpec, nodes: int) -> tuple[int, str]:
    """Every GPU form added up, as Slurm's job_submit plugin (access/slurm/job_submit.lua) adds them."""
    parts: list[tuple[int, str]] = []
    if spec.gpus:
        parts.append((gpu_count(spec.gpus), "--gpus"))
    if spec.gpus_per_node:
        parts.append((gpu_count(spec.gpus_per_node) * nodes, "--gpus-per-node x nodes"))
    if spec.gres and gres_gpus(spec.gres):
        parts.append((gres_gpus(spec.gres) * nodes, "--gres x nodes"))
    if spec.gpus_per_socket:
        sockets = spec.sockets_per_node or 1
        parts.append(
            (gpu_count(spec.gpus_per_socket) * sockets * nodes, "--gpus-per-socket x sockets x nodes")
        )
    if spec.gpus_per_task:
        tasks = spec.ntasks or (nodes * spec.tasks_per_node if spec.tasks_per_node else nodes)
        parts.append((gpu_count(spec.gpus_per_task) * tasks, "--gpus-per-task x tasks"))
    if not parts:
        return 0, "no GPU asked"
    return sum(n for n, _ in parts), " + ".join(words for _, words in parts)


def _cpus_per_node(partition: Partition) -> int:
    if partition.total_cpus and partition.total_nodes:
        return math.ceil(partition.total_cpus / partition.total_nodes)
    return 1
