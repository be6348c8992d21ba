"""The final job of a submit: the script read as the person, its #SBATCH lines merged with the request.

`prepare` resolves partition, time limit, nodes, CPUs, GPUs, memory and working directory and says where
each came from; nothing here queues anything or touches a budget (jobs.submit does, with this Plan).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from access import policy
from clusters import partitions, tokens
from clusters.models import Cluster
from clusters.refusal import Refusal
from clusters.slurm import JobSpec, Partition, SlurmError
from jobs import directives as sbatch
from jobs import scripts
from jobs.submit_request import SubmitRequest


class SubmitError(Refusal):
    """The job was not queued; `decision` and `plan` are what was decided and resolved before it stopped."""

    def __init__(
        self, message: str, *, code: str, status: int = 400, decision: Any = None, plan: Plan | None = None
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.decision = decision
        # The final job when it got that far, so a preview can show what was refused.
        self.plan = plan


@dataclass(frozen=True)
class Plan:
    """The final job: what will be submitted, where each value came from, and what it costs."""

    cluster: Cluster
    posix_user: str
    script: scripts.Script
    directives: sbatch.Directives
    spec: JobSpec
    resources: policy.Resources
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def cpus(self) -> int:
        return self.resources.cpus

    @property
    def gpus(self) -> int:
        return self.resources.gpus

    @property
    def gpu_hours(self) -> float:
        return round(self.resources.gpus * self.resources.time_limit / 60, 2)

    @property
    def cpu_hours(self) -> float:
        return round(self.resources.cpus * self.resources.time_limit / 60, 2)

    def job_dict(self) -> dict[str, Any]:
        """The final job in the same field names the API uses for a job."""
        spec = self.spec
        return {
            "script_path": self.script.path,
            "name": spec.name,
            "partition": spec.partition,
            "time_limit": spec.time_limit,
            "nodes": spec.nodes,
            "ntasks": spec.ntasks,
            "cpus_per_task": spec.cpus_per_task,
            "cpus": self.cpus,
            "gpus": self.gpus,
            "memory_mb": spec.memory_per_node,
            "working_directory": spec.working_directory,
            "standard_output": spec.standard_output,
            "standard_error": spec.standard_error,
            "account": spec.account,
            "qos": spec.qos,
            "user": self.posix_user,
            "sources": dict(self.sources),
        }

    def cost_dict(self) -> dict[str, float]:
        return {"gpu_hours": self.gpu_hours, "cpu_hours": self.cpu_hours}

    def directive_list(self) -> list[dict[str, Any]]:
        return [{"line": d.line, "option": d.option, "value": d.value} for d in self.directives.lines]


def _partition(cluster: Cluster, name: str | None) -> Partition:
    try:
        if name is None:
            found = partitions.default(cluster)
            if found is None:
                raise SubmitError(f"{cluster.name} has no partition.", code="invalid_partition")
            return found
        found = partitions.find(cluster, name)
    except SlurmError as e:
        raise SubmitError(_unavailable_words(cluster, e), code="cluster_unavailable", status=502) from None
    except (tokens.TokenRefused, tokens.KeyUnavailable) as e:
        raise SubmitError(str(e), code="cluster_unavailable", status=502) from None
    if found is None:
        names = ", ".join(p.name for p in partitions.partitions(cluster))
        raise SubmitError(
            f"{cluster.name} has no partition named {name!r} (its partitions: {names}).",
            code="invalid_partition",
        )
    return found


def _unavailable_words(cluster: Cluster, error: Exception) -> str:
    return f"{cluster.name} did not answer: {error} Nothing was queued."


def prepare(cluster: Cluster, request: SubmitRequest, posix_user: str) -> Plan:
    """Read the script as the person, parse it, and merge it with the request into the final job."""
    path = scripts.validate(cluster, request.script_path)
    script = scripts.read_as(cluster, posix_user, path)
    try:
        found = sbatch.parse(script.text)
    except sbatch.DirectiveError as e:
        raise SubmitError(f"{path}, {e.message}.", code="invalid_directive") from None
    if found.array:
        line = found.line_of("array")
        raise SubmitError(
            f"{path}, line {line}: job arrays (--array={found.array}) are not submitted through the console, "
            "because the budget check cannot count their tasks; submit it with sbatch from a terminal "
            "(its use is counted when it ends).",
            code="array_unsupported",
        )
    sources: dict[str, str] = {}

    def pick(attribute: str, requested: Any, scripted: Any) -> Any:
        if requested is not None:
            sources[attribute] = "request"
            return requested
        if scripted is not None:
            sources[attribute] = f"script line {found.line_of(attribute)}"
            return scripted
        return None

    partition = _partition(cluster, pick("partition", request.partition, found.partition))
    sources.setdefault("partition", "cluster default")
    time_limit = pick("time_limit", request.time_limit, found.time_limit)
    if time_limit is None:
        time_limit = partition.default_time_limit or _capped_default(partition)
        sources["time_limit"] = "partition default" if partition.default_time_limit else "console default"
    if partition.max_time_limit is not None and time_limit > partition.max_time_limit:
        raise SubmitError(
            f"Partition {partition.name} allows at most {partition.max_time_limit} minutes; "
            f"this job asks for {time_limit}.",
            code="time_limit_too_long",
        )
    nodes = pick("nodes", request.nodes, found.nodes) or 1
    sources.setdefault("nodes", "default")
    ntasks = found.ntasks
    if ntasks is not None:
        sources["ntasks"] = f"script line {found.line_of('ntasks')}"
    cpus_per_task = pick("cpus_per_task", request.cpus_per_task, found.cpus_per_task) or 1
    sources.setdefault("cpus_per_task", "default")
    gpus = request.gpus
    if gpus is not None:
        sources["gpus"] = "request"
    elif found.gpus is not None:
        gpus, sources["gpus"] = found.gpus, f"script line {found.line_of('gpus')}"
    elif found.gpus_per_node is not None:
        gpus, sources["gpus"] = found.gpus_per_node * nodes, f"script line {found.line_of('gpus_per_node')}"
    gpus = gpus or 0
    name = pick("name", request.name, found.name) or posixpath.basename(path)
    sources.setdefault("name", "script file name")
    workdir = _working_directory(cluster, posix_user, script, request, found, sources)
    # Slurm starts one task per node when no task count is given, each with cpus_per_task CPUs.
    cpus = max(ntasks or nodes, nodes) * cpus_per_task
    try:
        spec = JobSpec(
            script=script.text,
            working_directory=workdir,
            name=name,
            partition=partition.name,
            time_limit=time_limit,
            nodes=nodes,
            ntasks=ntasks,
            cpus_per_task=cpus_per_task,
            gpus=gpus or None,
            memory_per_node=found.memory_mb,
            standard_output=found.output,
            standard_error=found.error,
            account=found.account,
            qos=found.qos,
            # The person's login environment, as sbatch from their shell would have it.
            get_user_environment=True,
            # Priced for one run: a job Slurm started over after a node failure would be charged twice.
            requeue=False,
        )
    except ValueError as e:
        raise SubmitError(str(e), code="invalid_request") from None
    resources = policy.Resources(
        partition=partition.name,
        nodes=nodes,
        cpus=cpus,
        gpus=gpus,
        time_limit=time_limit,
        # --mem is per node; the policy (and the job_submit plugin) price the whole job.
        memory_mb=(found.memory_mb or 0) * nodes,
        account=found.account or "",
        qos=found.qos or "",
    )
    return Plan(cluster, posix_user, script, found, spec, resources, sources)


def _capped_default(partition: Partition) -> int:
    """The console's default walltime, but never more than the partition allows."""
    limit = settings.CLUSTERRA_DEFAULT_TIME_LIMIT
    return min(limit, partition.max_time_limit) if partition.max_time_limit else limit


def _working_directory(
    cluster: Cluster,
    posix_user: str,
    script: scripts.Script,
    request: SubmitRequest,
    found: sbatch.Directives,
    sources: dict[str, str],
) -> str:
    if request.working_directory:
        workdir, sources["working_directory"] = request.working_directory, "request"
    elif found.chdir:
        # sbatch reads a relative --chdir against where it runs; for the console that is the script's folder.
        workdir = posixpath.normpath(posixpath.join(script.folder, found.chdir))
        sources["working_directory"] = f"script line {found.line_of('chdir')}"
    else:
        return _default_workdir(script, sources)
    scripts.check_path(workdir, what="working_directory")
    if workdir != script.folder:
        scripts.check_directory(cluster, posix_user, workdir)
    return workdir


def _default_workdir(script: scripts.Script, sources: dict[str, str]) -> str:
    sources["working_directory"] = "script folder"
    return script.folder


# --- the whole flow ----------------------------------------------------------------------------
