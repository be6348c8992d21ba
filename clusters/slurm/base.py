"""What every adapter does the same way: the job mapping, submit results, and the shape of the interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from clusters.slurm.errors import (
    ESLURM_ALREADY_DONE,
    SlurmError,
    SlurmErrorItem,
    SlurmNotFound,
    SlurmProtocolError,
    error_for,
)
from clusters.slurm.http import SlurmResponse, Timeout, Transport
from clusters.slurm.parsing import (
    BASE_JOB_STATES,
    BASE_NODE_STATES,
    UNFINISHED_JOB_STATES,
    gpus_in_gres,
    gpus_in_tres,
    job_gpus,
    job_memory_mb,
    number,
    split_state,
    string_list,
    text,
    timestamp,
)
from clusters.slurm.types import (
    DEFAULT_PATH,
    ClusterInfo,
    Job,
    JobList,
    JobSpec,
    Node,
    Partition,
    SubmitResult,
)


class Adapter(ABC):
    """One slurmrestd API version mapped onto the plain types; subclasses know the wire shapes."""

    versions: ClassVar[tuple[str, ...]] = ()
    # Where a node's idle CPUs are: v0.0.38 says idle_cpus, v0.0.40+ alloc_idle_cpus.
    idle_cpus_key: ClassVar[str] = "idle_cpus"

    def __init__(
        self,
        base_url: str,
        *,
        user_name: str | None,
        token: str,
        version: str,
        timeout: Timeout | None = None,
    ):
        if version not in self.versions:
            raise ValueError(f"{type(self).__name__} does not speak {version}")
        self.version = version
        self.transport = Transport(base_url, self.auth_headers(user_name, token), timeout=timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.version} {self.transport.base_url}>"

    @property
    def prefix(self) -> str:
        return f"/slurm/{self.version}"

    @staticmethod
    @abstractmethod
    def auth_headers(user_name: str | None, token: str) -> dict[str, str]: ...

    # The wire: each subclass builds bodies and reads answers in its version's shapes.

    @abstractmethod
    def submit_body(self, spec: JobSpec) -> dict[str, Any]: ...

    @abstractmethod
    def parse_info(self, data: Mapping[str, Any]) -> ClusterInfo: ...

    @abstractmethod
    def parse_partition(self, raw: Mapping[str, Any]) -> Partition: ...

    def node_state(self, raw: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
        """The node's base state and its flags, in Slurm's upper-case words."""
        return split_state(raw.get("state"), BASE_NODE_STATES, upper=True)

    def parse_node(self, raw: Mapping[str, Any]) -> Node:
        state, flags = self.node_state(raw)
        cpus = number(raw.get("cpus"))
        alloc = number(raw.get("alloc_cpus"))
        idle = number(raw.get(self.idle_cpus_key))
        if idle is None and cpus is not None and alloc is not None:
            idle = cpus - alloc
        gpus = gpus_in_gres(raw.get("gres"))
        used = gpus_in_gres(raw.get("gres_used"))
        return Node(
            name=text(raw.get("name")),
            state=state,
            state_flags=tuple(dict.fromkeys(flags)),
            cpus=cpus,
            alloc_cpus=alloc,
            idle_cpus=idle,
            real_memory=number(raw.get("real_memory")),
            alloc_memory=number(raw.get("alloc_memory")),
            gpus=gpus if gpus is not None else (gpus_in_tres(raw.get("tres")) or 0),
            gpus_used=used if used is not None else (gpus_in_tres(raw.get("tres_used")) or 0),
            partitions=string_list(raw.get("partitions")),
            reason=text(raw.get("reason")),
        )

    @abstractmethod
    def decode_exit(self, raw: Any) -> tuple[int | None, int | None]: ...

    @abstractmethod
    def jobs(self, update_time: int | None = None) -> JobList: ...

    @abstractmethod
    def cancel(self, job_id: int | str, signal: str | None = None) -> None: ...

    # Operations whose flow is the same in every version.

    def info(self) -> ClusterInfo:
        response = self.transport.get(f"{self.prefix}/ping")
        response.raise_for_errors()
        return self.parse_info(response.data)

    def partitions(self) -> list[Partition]:
        response = self.transport.get(f"{self.prefix}/partitions")
        response.raise_for_errors()
        return [self.parse_partition(p) for p in items_of(response.data, "partitions")]

    def nodes(self) -> list[Node]:
        response = self.transport.get(f"{self.prefix}/nodes")
        response.raise_for_errors()
        return [self.parse_node(n) for n in items_of(response.data, "nodes")]

    def job(self, job_id: int | str) -> Job:
        response = self.transport.get(f"{self.prefix}/job/{job_path(job_id)}")
        response.raise_for_errors()
        jobs = [self.parse_job(j) for j in items_of(response.data, "jobs")]
        return pick_job(jobs, job_id)

    def submit(self, spec: JobSpec) -> SubmitResult:
        response = self.transport.request("POST", f"{self.prefix}/job/submit", body=self.submit_body(spec))
        return self.parse_submit(response)

    def parse_submit(self, response: SlurmResponse) -> SubmitResult:
        """A job id means the job is queued; whatever `errors[]` said with it is a warning, not a failure."""
        data = response.data
        job_id = number(data.get("job_id"))
        user_message = text(data.get("job_submit_user_msg"))
        if job_id is None:
            if response.errors:
                raise error_for(response.status, response.errors)
            raise SlurmProtocolError(
                "the submit answer has no job id and no error",
                response.status,
                said_by_slurm=False,
                outcome_unknown=True,
            )
        warnings = list(response.error_sentences()) + list(response.warnings)
        return SubmitResult(job_id=job_id, warnings=tuple(dict.fromkeys(warnings)), user_message=user_message)

    def parse_job(self, raw: Mapping[str, Any]) -> Job:
        state, flags = split_state(raw.get("job_state"), BASE_JOB_STATES)
        reason = text(raw.get("state_reason"))
        node_count = number(raw.get("node_count"))
        cpus = number(raw.get("cpus"))
        exit_code, exit_signal = self.decode_exit(raw.get("exit_code"))
        never_ran = not raw.get("nodes") and not raw.get("batch_host")
        if not state or state in UNFINISHED_JOB_STATES or never_ran or reason == "JobLaunchFailure":
            # Slurm reports 0 before a job ends and for one cancelled while pending, and
            # its own errno for a launch that failed: none of these is a process's status.
            exit_code, exit_signal = None, None
        array_job_id = number(raw.get("array_job_id")) or None
        array_task_id = number(raw.get("array_task_id")) if array_job_id else None
        return Job(
            job_id=number(raw.get("job_id")) or 0,
            name=text(raw.get("name")),
            comment=text(raw.get("comment")),
            extra=text(raw.get("extra")),
            user_name=text(raw.get("user_name")),
            user_id=number(raw.get("user_id")),
            account=text(raw.get("account")),
            partition=text(raw.get("partition")),
            qos=text(raw.get("qos")),
            state=state,
            state_flags=flags,
            state_reason=reason,
            exit_code=exit_code,
            exit_signal=exit_signal,
            submit_time=timestamp(raw.get("submit_time")),
            start_time=timestamp(raw.get("start_time")),
            end_time=timestamp(raw.get("end_time")),
            time_limit=number(raw.get("time_limit")),
            nodes=text(raw.get("nodes")),
            node_count=node_count,
            cpus=cpus,
            gpus=job_gpus(raw, node_count, number(raw.get("tasks"))),
            memory_mb=job_memory_mb(raw, cpus, node_count),
            working_directory=text(raw.get("current_working_directory")),
            standard_output=text(raw.get("standard_output")),
            standard_error=text(raw.get("standard_error")),
            array_job_id=array_job_id,
            array_task_id=array_task_id,
            array_task_string=text(raw.get("array_task_string")) if array_job_id else "",
            batch_host=text(raw.get("batch_host")),
            tres_requested=text(raw.get("tres_req_str")),
            tres_allocated=text(raw.get("tres_alloc_str")),
            restarts=number(raw.get("restart_cnt")) or 0,
        )

    def _cancel_failed(self, error: SlurmError) -> None:
        """A job that already ended cannot be cancelled again, and that is what the caller wanted anyway."""
        if ESLURM_ALREADY_DONE in error.codes:
            return
        raise error


def environment_with_path(spec: JobSpec) -> dict[str, str]:
    environment = dict(spec.environment)
    environment.setdefault("PATH", DEFAULT_PATH)
    return environment


def items_of(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = data.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise SlurmProtocolError(f"`{key}` is a {type(items).__name__}, not a list", said_by_slurm=False)
    return [i for i in items if isinstance(i, Mapping)]


def job_path(job_id: int | str) -> str:
    value = str(job_id).strip()
    # Job ids are digits with an optional array "_N" or het "+N" suffix; nothing else reaches a URL.
    if not value or not all(c.isdigit() or c in "_+" for c in value):
        raise ValueError(f"{job_id!r} is not a Slurm job id")
    return value


def pick_job(jobs: list[Job], job_id: int | str) -> Job:
    """The asked-for job: an array task id returns the whole array from v0.0.40 on."""
    wanted = str(job_id).strip()
    for job in jobs:
        if str(job.job_id) == wanted:
            return job
    if "_" in wanted:
        array_id, _, task = wanted.partition("_")
        for job in jobs:
            if str(job.array_job_id) == array_id and str(job.array_task_id) == task:
                return job
    if len(jobs) == 1:
        return jobs[0]
    raise SlurmNotFound(
        f"job {wanted} is not in slurmctld's answer",
        None,
        (SlurmErrorItem(None, "Invalid job id specified"),),
        said_by_slurm=False,
    )
