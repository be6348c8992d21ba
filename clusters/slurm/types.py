"""Plain values the slurmrestd client returns, the same whichever API version answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# Jobs get exactly this PATH when the caller sends none: slurmrestd passes the
# environment through verbatim (no login shell), and 22.05 refuses an empty one.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class JobSpec:
    """What to submit. `script` is the script's contents (slurmrestd never reads a path).

    `gpus` is the job's total; the adapters ask for `gpus / nodes` per node, so it
    must divide evenly, and a GPU job without `nodes` is pinned to one node so the
    total cannot grow with the node count Slurm picks.
    """

    script: str
    working_directory: str
    environment: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    partition: str | None = None
    time_limit: int | None = None
    nodes: int | None = None
    ntasks: int | None = None
    cpus_per_task: int | None = None
    gpus: int | None = None
    memory_per_node: int | None = None
    standard_output: str | None = None
    standard_error: str | None = None
    account: str | None = None
    qos: str | None = None
    array: str | None = None
    get_user_environment: bool = False
    # None: Slurm's default (JobRequeue, 1 on most sites). False: a node failure ends the job instead of
    # starting it over, so it runs (and is charged) once.
    requeue: bool | None = None
    # Slurm keeps it with the job and lists it back, so a caller can find a job whose submit
    # answer was lost; the console puts its own tag here (#SBATCH --comment is refused).
    comment: str | None = None

    def __post_init__(self) -> None:
        for name in ("time_limit", "nodes", "ntasks", "cpus_per_task", "memory_per_node"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive whole number, not {value!r}.")
        if self.gpus is not None:
            if not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 0:
                raise ValueError(f"gpus must be a whole number of GPUs, not {self.gpus!r}.")
            if self.gpus % (self.nodes or 1):
                raise ValueError(
                    f"{self.gpus} GPUs cannot be spread evenly over {self.nodes} nodes; "
                    "Slurm allocates the same number of GPUs on every node."
                )
        for key, value in self.environment.items():
            if not isinstance(key, str) or not key or "=" in key or not isinstance(value, str):
                raise ValueError(f"environment entry {key!r} must be a name without '=' and a string value.")

    @property
    def gpus_per_node(self) -> int:
        return (self.gpus or 0) // (self.nodes or 1)


@dataclass(frozen=True)
class Job:
    """One job as slurmctld knows it.

    `state` is the base state in Slurm's words ("PENDING", "RUNNING", "COMPLETED", …);
    `state_flags` holds the others from v0.0.40's list form ("COMPLETING", "REQUEUED").
    `exit_code` is the process's exit status and `exit_signal` the signal that killed it;
    both are None while the job has not ended, and `exit_code` is None for a job killed
    by a signal or one that never launched (then `state_reason` says why, e.g.
    "JobLaunchFailure"). Times are aware UTC datetimes; `time_limit` is in minutes,
    None meaning no limit.
    """

    job_id: int
    name: str = ""
    comment: str = ""
    user_name: str = ""
    user_id: int | None = None
    account: str = ""
    partition: str = ""
    qos: str = ""
    state: str = ""
    state_flags: tuple[str, ...] = ()
    state_reason: str = ""
    exit_code: int | None = None
    exit_signal: int | None = None
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    time_limit: int | None = None
    nodes: str = ""
    node_count: int | None = None
    cpus: int | None = None
    gpus: int = 0
    memory_mb: int | None = None
    working_directory: str = ""
    standard_output: str = ""
    standard_error: str = ""
    array_job_id: int | None = None
    array_task_id: int | None = None
    batch_host: str = ""
    tres_requested: str = ""
    tres_allocated: str = ""
    # How often Slurm started the job over (requeued it); each earlier run used the cluster too.
    restarts: int = 0

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_JOB_STATES


# Base states after which a job never runs again (requeue aside).
FINISHED_JOB_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)


@dataclass(frozen=True)
class Partition:
    """A partition. `is_default` is None where the API version does not say (v0.0.40 … v0.0.44)."""

    name: str
    state: str = ""
    is_default: bool | None = None
    max_time_limit: int | None = None
    default_time_limit: int | None = None
    total_nodes: int | None = None
    total_cpus: int | None = None
    nodes: str = ""
    gpus: int | None = None
    max_nodes_per_job: int | None = None


@dataclass(frozen=True)
class Node:
    """A compute node; `state` is the base state upper-cased ("IDLE", "MIXED"), flags apart ("DRAIN")."""

    name: str
    state: str = ""
    state_flags: tuple[str, ...] = ()
    cpus: int | None = None
    alloc_cpus: int | None = None
    idle_cpus: int | None = None
    real_memory: int | None = None
    alloc_memory: int | None = None
    gpus: int = 0
    gpus_used: int = 0
    partitions: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Controller:
    """One slurmctld as ping reports it: `state` is "UP" or "DOWN"."""

    hostname: str
    state: str
    primary: bool | None = None


@dataclass(frozen=True)
class ClusterInfo:
    api_version: str
    slurm_release: str
    controllers: tuple[Controller, ...] = ()
    cluster_name: str | None = None

    @property
    def is_up(self) -> bool:
        return any(c.state == "UP" for c in self.controllers)


@dataclass(frozen=True)
class SubmitResult:
    """A queued job. `warnings` are Slurm's texts that came with success (e.g. 2015, time limit too long)."""

    job_id: int
    warnings: tuple[str, ...] = ()
    user_message: str = ""


@dataclass(frozen=True)
class JobList:
    """The queue. `not_modified` means nothing changed since the `update_time` asked for.

    `last_update` is slurmctld's own clock for the next `update_time`; v0.0.38 does not
    report it (None), except that a 304 answer hands back the `update_time` asked for.
    """

    jobs: tuple[Job, ...] = ()
    last_update: int | None = None
    not_modified: bool = False
