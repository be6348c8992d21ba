"""The final job of a submit: the script read as the person, its #SBATCH lines merged with the request.

`prepare` resolves partition, time limit, nodes, CPUs, GPUs, memory and working directory and says where
each came from; nothing here queues anything or touches a budget (jobs.submit does, with this Plan).
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from access import policy
from clusters import partitions, tokens
from clusters.models import Cluster
from clusters.refusal import Refusal
from clusters.slurm import JobSpec, OptionNotCarried, Partition, SlurmError
from clusters.slurm import options as slurm_options
from jobs import directives as sbatch
from jobs import pricing, sbatch_options, scripts
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
        return round(self.resources.gpu_hours, 2)

    @property
    def cpu_hours(self) -> float:
        return round(self.resources.cpu_hours, 2)

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
            "memory_mb_total": self.resources.memory_mb,
            "array": spec.array,
            "working_directory": spec.working_directory,
            "standard_output": spec.standard_output,
            "standard_error": spec.standard_error,
            "account": spec.account,
            "qos": spec.qos,
            "user": self.posix_user,
            "options": self.options(),
            "sources": dict(self.sources),
        }

    def rows(self) -> list[tuple[str, Any, str]]:
        """The preview's table: the final job's values, then what the policy priced, each with its source."""
        hidden = {"script", "environment", "get_user_environment", "tag"}
        rows = [
            (f.name, getattr(self.spec, f.name), self.sources.get(f.name, "default"))
            for f in dataclasses.fields(self.spec)
            if f.name not in hidden and getattr(self.spec, f.name) not in (None, False)
        ]
        r = self.resources
        priced = [
            ("priced nodes", r.nodes, "nodes"),
            ("priced CPUs", r.cpus, "cpus"),
            ("priced GPUs", r.gpus, "gpus"),
            ("priced memory (MB)", r.memory_mb or "Slurm's default", "memory"),
        ]
        if self.spec.array:
            priced.append(("priced array tasks", self.sources.get("priced_array", ""), "array"))
        for label, value, key in priced:
            rows.append((label, value, self.sources.get(f"priced_{key}", "")))
        return rows

    def options(self) -> dict[str, Any]:
        """Every sbatch option the job carries beyond the fields above, by JobSpec field name."""
        shown = {"script", "environment", "working_directory", "get_user_environment", "tag"}
        shown |= {"name", "partition", "time_limit", "nodes", "ntasks", "cpus_per_task", "memory_per_node"}
        shown |= {"standard_output", "standard_error", "account", "qos", "array"}
        spec = self.spec
        return {
            f.name: getattr(spec, f.name)
            for f in dataclasses.fields(spec)
            if f.name not in shown and getattr(spec, f.name) not in (None, False)
        }

    def cost_dict(self) -> dict[str, float]:
        return {"gpu_hours": self.gpu_hours, "cpu_hours": self.cpu_hours}

    def directive_list(self) -> list[dict[str, Any]]:
        return [
            {"line": d.line, "option": d.option, "value": d.value if isinstance(d.value, str) else ""}
            for d in self.directives.lines
        ]


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


# Request fields that stand for an sbatch option: the field wins over `options`, which wins over the script.
_REQUEST_FIELDS = {
    "partition": "partition",
    "time_limit": "time_limit",
    "nodes": "nodes",
    "cpus_per_task": "cpus_per_task",
    "name": "name",
}
_GPU_FIELDS = ("gpus", "gpus_per_node", "gpus_per_task", "gpus_per_socket", "gres")
# Directive fields that are not JobSpec fields of the same name (handled in prepare).
_NOT_SPEC = frozenset({"nodes", "chdir", "export", "get_user_environment"})


def _script(cluster: Cluster, request: SubmitRequest, posix_user: str) -> scripts.Script:
    if request.script is not None:
        return scripts.inline(cluster, posix_user, request.script)
    path = scripts.validate(cluster, request.script_path)
    # A working directory the request names is checked with the read: one head-node command for both.
    return scripts.read_as(cluster, posix_user, path, directory=_asked_directory(request, path))


def _asked_directory(request: SubmitRequest, script_path: str) -> str | None:
    """The request's working directory when it must be checked (not the script's own folder)."""
    wanted = request.working_directory
    return wanted if wanted and wanted != posixpath.dirname(script_path) else None


def _said(
    script: scripts.Script, request: SubmitRequest
) -> tuple[dict[str, Any], dict[str, str], sbatch.Directives]:
    """Every option the job says, and where each came from: the script, then `options`, then the fields."""
    try:
        found = sbatch.parse(script.text)
    except sbatch.DirectiveError as e:
        raise SubmitError(f"{script.label}, {e.message}.", code="invalid_directive") from None
    try:
        asked = sbatch.from_request(request.options or {})
    except sbatch.DirectiveError as e:
        raise SubmitError(f"{e.message}.", code="invalid_request") from None
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, value in found.values.items():
        values[name], sources[name] = value, f"script line {found.line_of(name)}"
    for name, value in asked.values.items():
        values[name], sources[name] = value, "request options"
    for attribute, name in _REQUEST_FIELDS.items():
        value = getattr(request, attribute)
        if value is not None:
            values[name], sources[name] = ((value, value) if name == "nodes" else value), "request"
    if request.gpus is not None:
        # The request's gpus is the whole job's count, and replaces whatever GPU form the script used.
        for name in _GPU_FIELDS:
            values.pop(name, None)
            sources.pop(name, None)
        if request.gpus:
            values["gpus"], sources["gpus"] = str(request.gpus), "request"
    return values, sources, found


def prepare(cluster: Cluster, request: SubmitRequest, posix_user: str) -> Plan:
    """Read the script as the person, parse it, and merge it with the request into the final job."""
    script = _script(cluster, request, posix_user)
    values, sources, found = _said(script, request)

    partition = _partition(cluster, values.get("partition"))
    sources.setdefault("partition", "cluster default")
    time_limit = values.get("time_limit")
    if time_limit is None:
        time_limit = partition.default_time_limit or _capped_default(partition)
        sources["time_limit"] = "partition default" if partition.default_time_limit else "console default"
    if partition.max_time_limit is not None and time_limit > partition.max_time_limit:
        raise SubmitError(
            f"Partition {partition.name} allows at most {partition.max_time_limit} minutes; "
            f"this job asks for {time_limit}.",
            code="time_limit_too_long",
        )
    least, most = values.get("nodes") or (None, None)
    name = values.get("name") or posixpath.basename(script.path or "inline.sh")
    sources.setdefault("name", "script file name" if script.path else "console default")
    workdir = _working_directory(cluster, posix_user, script, request, values, sources)
    spec_fields = {k: v for k, v in values.items() if k not in _NOT_SPEC}
    spec_fields.update(partition=partition.name, time_limit=time_limit, name=name)
    if spec_fields.get("ntasks") is None and spec_fields.get("tasks_per_node"):
        # What sbatch itself does before it sends the job (and slurmrestd does not): --ntasks-per-node
        # without --ntasks means that many tasks on each of the (fewest) nodes.
        spec_fields["ntasks"] = (least or 1) * spec_fields["tasks_per_node"]
        sources["ntasks"] = f"= nodes x --ntasks-per-node, {sources['tasks_per_node']}"
    # Requeue is left to the site's JobRequeue unless the script says, as for sbatch; a job Slurm starts
    # over is charged for every run (jobs.accounting), as the job_submit plugin counts it.
    try:
        environment = _environment(values.get("export"))
        spec = JobSpec(
            script=script.text,
            working_directory=workdir,
            environment=environment,
            nodes=least,
            max_nodes=most if most != least else None,
            # The person's login environment, as sbatch from their shell would have it.
            get_user_environment=True,
            **spec_fields,
        )
    except ValueError as e:
        raise SubmitError(str(e), code="invalid_request") from None
    _check_carried(cluster, script, spec, sources)
    resources, priced = pricing.price(spec, partition, found.get("array"))
    sources.update({key: _said_where(words, sources) for key, words in priced.items()})
    return Plan(cluster, posix_user, script, found, spec, resources, sources)


def _said_where(words: str, sources: dict[str, str]) -> str:
    """Each --option named in a pricing sentence, followed by where the job got it ("script line 4")."""

    def where(match: re.Match[str]) -> str:
        option = sbatch_options.OPTIONS.get(match[1])
        source = sources.get(option.field) if option else None
        return f"{match[0]} ({source})" if source else match[0]

    return re.sub(r"--([a-z-]+)", where, words)


def _check_carried(cluster: Cluster, script: scripts.Script, spec: JobSpec, sources: dict[str, str]) -> None:
    """What this cluster's slurmrestd cannot express is refused now, with its line, before budget is held."""
    try:
        cluster.service_slurm().adapter.submit_body(spec)
    except OptionNotCarried as e:
        where = sources.get(e.option, "")
        where = (
            f", {where.replace('script ', '')}"
            if where.startswith("script")
            else f" ({where})"
            if where
            else ""
        )
        raise SubmitError(f"{script.label}{where}: {e}", code="option_unsupported") from None
    except SlurmError as e:
        raise SubmitError(_unavailable_words(cluster, e), code="cluster_unavailable", status=502) from None
    except (tokens.TokenRefused, tokens.KeyUnavailable) as e:
        raise SubmitError(str(e), code="cluster_unavailable", status=502) from None


def _environment(export: str | None) -> dict[str, str]:
    """--export: the variables it sets, and SLURM_EXPORT_ENV as sbatch sets it (NONE: nothing else passes)."""
    if export is None:
        return {}
    said = slurm_options.export_variables(export)
    environment = dict(said.variables)
    # sbatch passes the option on as written, so srun inside the job exports the same way.
    environment["SLURM_EXPORT_ENV"] = export
    return environment


def _capped_default(partition: Partition) -> int:
    """The console's default walltime, but never more than the partition allows."""
    limit = settings.CLUSTERRA_DEFAULT_TIME_LIMIT
    return min(limit, partition.max_time_limit) if partition.max_time_limit else limit


def _working_directory(
    cluster: Cluster,
    posix_user: str,
    script: scripts.Script,
    request: SubmitRequest,
    values: dict[str, Any],
    sources: dict[str, str],
) -> str:
    if request.working_directory:
        workdir, sources["working_directory"] = request.working_directory, "request"
    elif values.get("chdir"):
        # sbatch reads a relative --chdir against where it runs; for the console that is the script's folder.
        workdir = posixpath.normpath(posixpath.join(script.folder, values["chdir"]))
        sources["working_directory"] = sources.pop("chdir")
    else:
        return _default_workdir(script, sources)
    scripts.check_path(workdir, what="working_directory")
    already = request.script is None and workdir == _asked_directory(request, script.path)
    if workdir != script.folder and not already:
        # The script's own --chdir: known only once it is read, so asked in a second command.
        scripts.check_directory(cluster, posix_user, workdir)
    return workdir


def _default_workdir(script: scripts.Script, sources: dict[str, str]) -> str:
    sources["working_directory"] = "script folder"
    return script.folder


# --- the whole flow ----------------------------------------------------------------------------
