"""The shapes of /v1's job answers: the OpenAPI document says them; every answer is checked against them."""

from __future__ import annotations

from typing import Any, Literal

from ninja import Field, Schema
from pydantic.json_schema import SkipJsonSchema

DATE_TIME = {"format": "date-time"}
# A field an answer leaves out when it has nothing to say (the operation dumps with exclude_unset), rather
# than sending null: the document shows it as optional, not nullable.
Absent = SkipJsonSchema[None]


class ArrayTasks(Schema):
    array: str = Field(description="The --array expression as submitted through the console, else empty.")
    total: int = Field(description="Tasks Slurm has shown so far (started, ended, or still held).")
    counts: dict[str, int] = Field(description='Tasks by Slurm state, e.g. {"RUNNING": 3, "PENDING": 7}.')
    summary: str = Field(description='The counts in words: "3 running · 7 pending · 90 done".')
    held: str = Field(
        description='The tasks Slurm still holds unstarted, as it writes them ("3-99%10"); empty when none.'
    )


class Job(Schema):
    id: int = Field(description="The Slurm job id (a task of an array: its own job id).")
    job_id: str = Field(
        description="The id Slurm's commands and these routes take: 123, or 123_4 for task 4 of array 123."
    )
    array_job_id: int | None = Field(description="The array's job id, for a job array or one of its tasks.")
    array_task_id: int | None = Field(description="The task's index, for one task of a job array.")
    tasks: ArrayTasks | None = Field(description="For a job array: its tasks by state (null otherwise).")
    cluster: str = Field(description="The cluster's slug.")
    name: str = Field(description="The job's name.")
    user: str = Field(description="The POSIX user the job runs as.")
    origin: Literal["console", "outside"] = Field(description="Where it was submitted.")
    partition: str = Field(description="Slurm partition.")
    account: str = Field(description="Slurm account.")
    qos: str = Field(description="Slurm QOS.")
    state: str = Field(description="Slurm's job state, e.g. PENDING, RUNNING, COMPLETED.")
    state_text: str = Field(description="The state in plain words.")
    reason: str = Field(description="Slurm's state reason, e.g. Resources (empty when there is none).")
    reason_text: str = Field(description="The reason in plain words.")
    policy_note: str = Field(
        description="Why the console cancelled the job, when the policy stopped allowing it "
        "(empty otherwise)."
    )
    submit_time: str | None = Field(
        description="When it was submitted (ISO 8601, UTC).", json_schema_extra=DATE_TIME
    )
    start_time: str | None = Field(description="When it started.", json_schema_extra=DATE_TIME)
    end_time: str | None = Field(description="When it ended.", json_schema_extra=DATE_TIME)
    elapsed_seconds: int | None = Field(description="Seconds it has run.")
    elapsed: str = Field(description="The same as Slurm writes it, [D-]HH:MM:SS (empty before it starts).")
    time_limit: int | None = Field(description="Time limit in minutes.")
    nodes: int = Field(description="Node count.")
    node_list: str = Field(description="The nodes it runs or ran on (a Slurm hostlist).")
    cpus: int = Field(description="CPUs in total.")
    gpus: int = Field(description="GPUs in total.")
    memory_mb: int | None = Field(description="Memory per node in MB.")
    exit_code: int | None = Field(description="The script's exit status once it ended.")
    exit_signal: int | None = Field(description="The signal that ended it, if one did.")
    script_path: str = Field(
        description="The script's path on the cluster (empty for jobs from outside the console)."
    )
    working_directory: str = Field(description="The job's working directory.")
    stdout_path: str = Field(description="Where its standard output goes.")
    stderr_path: str = Field(description="Where its standard error goes.")
    terminal_url: str = Field(description="The console page of a terminal in the working directory.")
    url: str = Field(description="This job in the API.")
    page_url: str = Field(description="This job's page in the console.")


class JobList(Schema):
    jobs: list[Job]
    page: int = Field(description="This page: the last one when a later page was asked for.")
    per_page: int = Field(description="Jobs per page.")
    total: int = Field(description="Jobs matching the filters.")
    pages: int = Field(description="Pages in all.")
    update_time: float = Field(description="Pass it back as update_time to get only later changes.")


class JobDetail(Schema):
    job: Job
    note: str = Field(description="Why the live state could not be read (empty if it was).")


class CancelResult(Schema):
    job: Job
    message: str = Field(description="What happened.")


class OutputStream(Schema):
    path: str = Field(description="The file read.")
    text: str = Field(description="Its last lines.")
    error: str = Field(description="Why it cannot be shown (empty when it can).")
    truncated: bool = Field(description="The lines were longer than the console shows at once.")
    same_as_stdout: bool = Field(description="stderr goes to the same file as stdout.")


class JobOutput(Schema):
    job_id: int = Field(description="The job.")
    lines: int = Field(description="Lines asked for.")
    stdout: OutputStream | Absent = None
    stderr: OutputStream | Absent = None


class Decision(Schema):
    allowed: bool
    code: str = Field(
        description="A stable code: `ok`, `replayed`, or why not (`no_grant`, `gpu_budget`, …)."
    )
    message: str = Field(description="One sentence with the numbers; pages, API and CLI show it as it is.")
    facts: dict[str, Any] = Field(description="The numbers behind the sentence.")


class FinalJob(Schema):
    script_path: str = Field(description="The script's path; empty for an inline script.")
    name: str | None = Field(description="Job name.")
    partition: str | None = Field(description="Partition.")
    time_limit: int | None = Field(description="Minutes.")
    nodes: int | None = Field(description="Nodes.")
    ntasks: int | None = Field(description="Tasks, when the script says.")
    cpus_per_task: int | None = Field(description="CPUs per task.")
    cpus: int = Field(description="CPUs in total.")
    gpus: int = Field(description="GPUs in total.")
    memory_mb: int | None = Field(description="Memory per node in MB, when the script says.")
    memory_mb_total: int = Field(description="The whole job's memory as priced, in MB (0: Slurm's default).")
    array: str | None = Field(description="--array, when the job is an array.")
    working_directory: str = Field(description="Working directory.")
    standard_output: str | None = Field(description="--output, when the script says.")
    standard_error: str | None = Field(description="--error, when the script says.")
    account: str | None = Field(description="--account, when the script says.")
    qos: str | None = Field(description="--qos, when the script says.")
    user: str = Field(description="The POSIX user it runs as.")
    options: dict[str, Any] = Field(
        description="Every other sbatch option the job carries, by field name (tasks_per_node, exclusive, …)."
    )
    sources: dict[str, str] = Field(
        description="Where each value came from: `request`, `script line N`, `partition default`, …"
    )


class Directive(Schema):
    line: int = Field(description="Line in the script.")
    option: str = Field(description="Long option name.")
    value: str = Field(description="Its value; empty for a flag such as --exclusive or --hold.")


class Cost(Schema):
    gpu_hours: float = Field(description="GPUs times the time limit.")
    cpu_hours: float = Field(description="CPUs times the time limit.")


class SubmitResult(Schema):
    dry_run: bool
    replayed: bool = Field(description="An earlier request with this Idempotency-Key queued the job.")
    decision: Decision
    warnings: list[str] = Field(description="What Slurm said alongside success.")
    job: Job | Absent = None
    final_job: FinalJob | Absent = None
    directives: list[Directive] | Absent = Field(None, description="The #SBATCH directives found.")
    cost: Cost | Absent = None
