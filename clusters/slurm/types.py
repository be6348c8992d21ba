"""Plain values the slurmrestd client returns, the same whichever API version answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# Jobs get exactly this PATH when the caller sends none: slurmrestd passes the
# environment through verbatim (no login shell), and 22.05 refuses an empty one.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class OptionNotCarried(ValueError):
    """An sbatch option this slurmrestd version cannot express; `option` is the JobSpec field."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(message)


@dataclass(frozen=True)
class JobSpec:
    """What to submit, in sbatch's terms. `script` is the script's contents (slurmrestd never reads a path).

    Each field is one sbatch option, with sbatch's meaning (the option's name is in the comment where
    the field's name differs); None means "not said", so Slurm's default applies. GPU amounts are kept
    as written ("2", "a100:2"): Slurm reads the type. Each adapter turns these into its version's keys
    and refuses, with a SlurmError-free ValueError, what its version cannot carry (`unsupported`).
    """

    script: str
    working_directory: str
    environment: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    partition: str | None = None
    time_limit: int | None = None
    time_min: int | None = None
    nodes: int | None = None
    # --nodes=min-max: the most nodes the job may get (None: exactly `nodes`).
    max_nodes: int | None = None
    ntasks: int | None = None
    tasks_per_node: int | None = None
    tasks_per_socket: int | None = None
    tasks_per_core: int | None = None
    tasks_per_gpu: int | None = None
    cpus_per_task: int | None = None
    cpus_per_gpu: int | None = None
    min_cpus_per_node: int | None = None  # --mincpus
    sockets_per_node: int | None = None
    cores_per_socket: int | None = None
    threads_per_core: int | None = None
    gpus: str | None = None  # --gpus, for the whole job
    gpus_per_node: str | None = None
    gpus_per_task: str | None = None
    gpus_per_socket: str | None = None
    gres: str | None = None  # --gres, per node
    memory_per_node: int | None = None  # --mem, MB
    memory_per_cpu: int | None = None
    memory_per_gpu: int | None = None
    tmp_disk_per_node: int | None = None  # --tmp, MB
    exclusive: str | None = None  # "exclusive", "user", "mcs" or "topo"
    oversubscribe: bool | None = None
    constraint: str | None = None
    prefer: str | None = None
    nodelist: str | None = None
    exclude: str | None = None
    dependency: str | None = None
    kill_on_invalid_dependency: bool | None = None
    begin: str | None = None  # as written: "now+1hour", "16:00", "2027-01-01T08:00"
    deadline: str | None = None
    signal: str | None = None  # [{R}{B}:]SIGNAL[@seconds]
    mail_type: str | None = None
    mail_user: str | None = None
    open_mode: str | None = None  # "append" or "truncate"
    standard_output: str | None = None
    standard_error: str | None = None
    standard_input: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    licenses: str | None = None
    wckey: str | None = None
    nice: int | None = None
    distribution: str | None = None
    spread_job: bool | None = None
    array: str | None = None
    hold: bool = False
    get_user_environment: bool = False
    # None: Slurm's default (JobRequeue, 1 on most sites). False: a node failure ends the job instead of
    # starting it over; True: it starts over (each run is charged, jobs.accounting).
    requeue: bool | None = None
    # The person's own --comment, kept as written.
    comment: str | None = None
    # The console's tag, so a job whose submit answer was lost can be found again (jobs.claims): in the
    # job's `extra` where the API has it (v0.0.40+), else in the comment when the person left it free.
    tag: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "time_limit",
            "time_min",
            "nodes",
            "max_nodes",
            "ntasks",
            "tasks_per_node",
            "tasks_per_socket",
            "tasks_per_core",
            "tasks_per_gpu",
            "cpus_per_task",
            "cpus_per_gpu",
            "min_cpus_per_node",
            "sockets_per_node",
            "cores_per_socket",
            "threads_per_core",
            "memory_per_node",
            "memory_per_cpu",
            "memory_per_gpu",
            "tmp_disk_per_node",
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive whole number, not {value!r}.")
        if self.max_nodes is not None and self.max_nodes < (self.nodes or 1):
            raise ValueError(f"max_nodes {self.max_nodes} is below nodes {self.nodes}.")
        for key, value in self.environment.items():
            if not isinstance(key, str) or not key or "=" in key or not isinstance(value, str):
                raise ValueError(f"environment entry {key!r} must be a name without '=' and a string value.")


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
    # Free text kept with the job (v0.0.40+); the console's submit tag goes here where it can.
    extra: str = ""
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
    # On an array's pending record, the tasks that have not started yet ("3-99%10"); empty elsewhere.
    array_task_string: str = ""
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
    # Why it does not respond, where the API says (v0.0.45: "Protocol authentication error").
    status: str = ""


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
