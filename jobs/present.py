"""One way to show a job and a page of jobs, shared by the API, the live list and the CLI's answers."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Q, QuerySet

from access.present import preview_words
from clusters.models import Cluster
from clusters.refusal import Refusal
from clusters.slurm import FINISHED_JOB_STATES
from jobs.models import JobRecord
from jobs.reasons import reason_words, state_words
from prepared import Prepared

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 200
# Any page past the last shows the last, so a larger number need not be read: reading it costs nothing
# below this, while Python refuses past 4,300 digits (a 500, not an answer).
MAX_PAGE = 1_000_000
# Filter words beside Slurm's own states: "active" is everything not yet finished.
STATE_GROUPS = {"ACTIVE", "FINISHED"}
KNOWN_STATES = (
    frozenset({"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING"}) | FINISHED_JOB_STATES
)

# Only the columns a list row shows: a page of 50 out of 10,000 reads 50 narrow rows.
LIST_COLUMNS = (
    "id",
    "cluster__slug",
    "slurm_job_id",
    "name",
    "posix_user",
    "origin",
    "partition",
    "account",
    "qos",
    "state",
    "reason",
    "policy_note",
    "submit_time",
    "start_time",
    "end_time",
    "time_limit",
    "node_count",
    "node_list",
    "cpus",
    "gpus",
    "memory_mb",
    "exit_code",
    "exit_signal",
    "script_path",
    "working_directory",
    "stdout_path",
    "stderr_path",
    "created",
    "array",
    "array_parent_id",
    "array_task_id",
    "array_summary",
)

# How an array's task counts read, in this order: "3 running · 7 pending · 90 done".
TASK_WORDS = (
    ("RUNNING", "running"),
    ("COMPLETING", "completing"),
    ("CONFIGURING", "starting"),
    ("SUSPENDED", "suspended"),
    ("PENDING", "pending"),
    ("COMPLETED", "done"),
    ("FAILED", "failed"),
    ("OUT_OF_MEMORY", "out of memory"),
    ("TIMEOUT", "timed out"),
    ("NODE_FAIL", "lost to a node failure"),
    ("BOOT_FAIL", "failed to boot"),
    ("DEADLINE", "past their deadline"),
    ("PREEMPTED", "preempted"),
    ("CANCELLED", "cancelled"),
)


# The fields of a submit (and of the final job) as the pages name them; the API keeps its JSON names.
FIELD_LABELS = {
    "script_path": "Script path",
    "script": "Script",
    "options": "More sbatch options",
    "partition": "Partition",
    "time_limit": "Time limit",
    "nodes": "Nodes",
    "ntasks": "Tasks",
    "cpus_per_task": "CPUs per task",
    "gpus": "GPUs",
    "name": "Job name",
    "working_directory": "Working directory",
    "memory_per_node": "Memory per node (MB)",
    "standard_output": "Output file",
    "standard_error": "Error file",
    "account": "Account",
    "qos": "QOS",
    "array": "Array",
}
# A name with an underscore is never a plain word, so it is replaced wherever it stands; a one-word
# name ("name", "nodes") only where a sentence starts with it, as the API's checks write them. Not inside
# a path or a file name: /home/ada/time_limit.sh stays as it is.
_COMPOUND = re.compile(r"(?<![\w/.-])(" + "|".join(n for n in FIELD_LABELS if "_" in n) + r")(?![\w/-]|\.\w)")


def label(field: str) -> str:
    """A field's name for people: "time_limit" -> "Time limit"."""
    return FIELD_LABELS.get(field) or field.replace("_", " ").capitalize()


def field_named(message: str) -> str | None:
    """The submit field a refusal's sentence is about, when it starts by naming one."""
    first = re.match(r"[a-z_]+", message)
    word = first.group(0) if first else ""
    return word if word in FIELD_LABELS and message[len(word) : len(word) + 1] in (" ", ":") else None


def for_people(message: str) -> str:
    """A refusal's sentence with the fields named as the form names them ("Time limit must be …").

    The same sentence reaches /v1 naming the JSON field; only the pages reword it.
    """
    field = field_named(message)
    if field:
        message = label(field) + message[len(field) :]
    return _COMPOUND.sub(lambda m: label(m.group(1)), message)


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def elapsed_words(seconds: int | None) -> str:
    """Slurm's way of writing a duration: [D-]HH:MM:SS."""
    if seconds is None:
        return ""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def terminal_url(cluster_slug: str, working_directory: str) -> str:
    query = f"?{urlencode({'cwd': working_directory})}" if working_directory else ""
    return f"/clusters/{cluster_slug}/terminal/{query}"


def tasks_words(counts: dict[str, int]) -> str:
    """An array's tasks by state in a person's words: "3 running · 7 pending · 90 done"."""
    known = dict(TASK_WORDS)
    order = [state for state, _ in TASK_WORDS] + sorted(set(counts) - set(known))
    return " · ".join(
        f"{counts[state]} {known.get(state, state.lower())}" for state in order if counts.get(state)
    )


def _tasks(row: dict[str, Any]) -> dict[str, Any] | None:
    summary = row.get("array_summary") or {}
    if row.get("array_parent_id") is not None or not (summary or row.get("array")):
        return None
    counts = {str(k): int(v) for k, v in (summary.get("counts") or {}).items()}
    return {
        "array": row.get("array") or "",
        "total": sum(counts.values()),
        "counts": counts,
        "summary": tasks_words(counts),
        "held": summary.get("held", ""),
    }


def job_dict(record: JobRecord | dict[str, Any]) -> dict[str, Any]:
    """The API's Job object, from a record or from one row of `values(*LIST_COLUMNS)`."""
    row = record if isinstance(record, dict) else _row(record)
    slug = row["cluster__slug"]
    tasks = _tasks(row)
    array_job_id = row.get("array_parent__slurm_job_id")
    task_id = row.get("array_task_id") if array_job_id is not None else None
    if tasks is not None:
        array_job_id = row["slurm_job_id"]
    job_id = f"{array_job_id}_{task_id}" if task_id is not None else str(row["slurm_job_id"])
    start, end = row["start_time"], row["end_time"]
    elapsed = None
    if start is not None:
        elapsed = max(0, int(((end or datetime.now(UTC)) - start).total_seconds()))
    return {
        "id": row["slurm_job_id"],
        "job_id": job_id,
        "array_job_id": array_job_id,
        "array_task_id": task_id,
        "tasks": tasks,
        "cluster": slug,
        "name": row["name"],
        "user": row["posix_user"],
        "origin": row["origin"],
        "partition": row["partition"],
        "account": row["account"],
        "qos": row["qos"],
        "state": row["state"],
        "state_text": state_words(row["state"]),
        "reason": row["reason"],
        "reason_text": reason_words(row["reason"]),
        "policy_note": row["policy_note"],
        "submit_time": iso(row["submit_time"] or row["created"]),
        "start_time": iso(start),
        "end_time": iso(end),
        "elapsed_seconds": elapsed,
        "elapsed": elapsed_words(elapsed),
        "time_limit": row["time_limit"],
        "nodes": row["node_count"],
        "node_list": row["node_list"],
        "cpus": row["cpus"],
        "gpus": row["gpus"],
        "memory_mb": row["memory_mb"],
        "exit_code": row["exit_code"],
        "exit_signal": row["exit_signal"],
        "script_path": row["script_path"],
        "working_directory": row["working_directory"],
        "stdout_path": row["stdout_path"],
        "stderr_path": row["stderr_path"],
        "terminal_url": terminal_url(slug, row["working_directory"]),
        "url": f"/v1/clusters/{slug}/jobs/{job_id}",
        "page_url": f"/clusters/{slug}/jobs/{job_id}/",
    }


def _row(record: JobRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in LIST_COLUMNS if "__" not in name}
    row["cluster__slug"] = record.cluster.slug
    if record.array_parent_id is not None:
        row["array_parent__slurm_job_id"] = record.array_parent.slurm_job_id
    return row


def for_page(job: dict[str, Any]) -> dict[str, Any]:
    """The API's Job object with what a page draws besides: its times as datetimes, whether it ticks.

    Only the pages read these; the live list draws the same from the JSON (jobs/static/jobs/job_list.js).
    """
    times = {key: _parse(job[f"{key}_time"]) for key in ("submit", "start", "end")}
    return job | {"times": times, "ticking": is_ticking(job), "finished": job["state"] in FINISHED_JOB_STATES}


def is_ticking(job: dict[str, Any]) -> bool:
    """Whether the job's elapsed time still grows (a live page redraws it every second)."""
    return job["state"] == "RUNNING" and bool(job["start_time"]) and not job["end_time"]


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def task_rows(array: JobRecord) -> list[dict[str, Any]]:
    """The API's Job object of each task of an array that Slurm listed on its own, by task index."""
    rows = list(array.tasks.order_by("array_task_id").values(*LIST_COLUMNS))
    for row in rows:
        row["array_parent__slurm_job_id"] = array.slurm_job_id
    return [job_dict(r) for r in rows]


class FilterError(Refusal):
    """A filter value the list does not understand; the message says which values work."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_request")


@dataclass(frozen=True)
class JobPage:
    jobs: list[dict[str, Any]]
    page: int
    per_page: int
    total: int
    update_time: float
    changed: bool = True

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "page": self.page,
            "per_page": self.per_page,
            "total": self.total,
            "pages": self.pages,
            "update_time": self.update_time,
        }


def states_filter(value: str | None) -> list[str]:
    """Slurm states from "RUNNING,pending" (case does not matter), or the groups "active" and "finished"."""
    if not value:
        return []
    words = [w.strip().upper() for w in value.split(",") if w.strip()]
    for word in words:
        if word not in KNOWN_STATES and word not in STATE_GROUPS:
            raise FilterError(
                f"state {word!r} is not a Slurm job state; use e.g. PENDING, RUNNING, COMPLETED, FAILED, "
                "CANCELLED, or active / finished."
            )
    return words


def whole_number(raw: str, name: str, *, maximum: int) -> int:
    """A query value that must be a whole number from 1, capped at `maximum`; FilterError names it otherwise.

    Only ASCII digits: str.isdigit() also says yes to "²", which int() refuses. A number with more digits
    than `maximum` is more than it without being read (int() refuses past 4,300 digits).
    """
    digits = raw.lstrip("0")
    if not (raw.isascii() and raw.isdigit() and digits):
        shown = raw if len(raw) <= 20 else raw[:20] + "…"  # a message must not echo a megabyte back
        raise FilterError(f"{name} must be a positive whole number, not {shown!r}.")
    return maximum if len(digits) > len(str(maximum)) else min(int(digits), maximum)


def page_number(raw: str | None) -> int:
    """`page=` of the list: 1 when absent; past the last page is fine (page_of answers with the last)."""
    return whole_number(raw, "page", maximum=MAX_PAGE) if raw else 1


def jobs_of(person: Any, cluster: Cluster) -> QuerySet[JobRecord]:
    """The person's jobs on the cluster: an array is one of them (its tasks are under it)."""
    return JobRecord.objects.submitted().filter(person=person, cluster=cluster, array_parent__isnull=True)


def filtered(queryset: QuerySet[JobRecord], states: list[str], partition: str | None) -> QuerySet[JobRecord]:
    if states:
        plain = [s for s in states if s not in STATE_GROUPS]
        condition = Q(state__in=plain) if plain else Q(pk__in=[])
        if "ACTIVE" in states:
            condition |= ~Q(state__in=FINISHED_JOB_STATES)
        if "FINISHED" in states:
            condition |= Q(state__in=FINISHED_JOB_STATES)
        queryset = queryset.filter(condition)
    if partition:
        queryset = queryset.filter(partition=partition)
    return queryset


def page_of(
    person: Any,
    cluster: Cluster,
    *,
    states: list[str],
    partition: str | None,
    page: int = 1,
    per_page: int = DEFAULT_PER_PAGE,
    since: float | None = None,
) -> JobPage:
    """One page of the person's jobs, newest first; with `since`, only jobs changed after that time.

    A page past the last is the last page (its number is in the answer), so OFFSET never passes the rows.
    """
    now = datetime.now(UTC).timestamp()
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    if since is None and page == 1 and not states and not partition:
        # What the list, its feed and `GET /v1/…/jobs` ask nearly every time: two prepared queries.
        counted = _COUNT.rows(person.pk, cluster.pk)
        rows = _first_page(per_page).rows(person.pk, cluster.pk)
        return JobPage([job_dict(r) for r in rows], 1, per_page, counted[0]["total"] if counted else 0, now)
    queryset = filtered(jobs_of(person, cluster), states, partition)
    if since is not None:
        changed = queryset.filter(updated__gte=datetime.fromtimestamp(since, UTC))
        rows = list(changed.order_by("-created", "-id").values(*LIST_COLUMNS)[:MAX_PER_PAGE])
        return JobPage([job_dict(r) for r in rows], 1, max(len(rows), 1), len(rows), now, changed=bool(rows))
    total = queryset.count()
    pages = max(1, -(-total // per_page))
    page = max(1, min(page, pages))
    start = (page - 1) * per_page
    rows = list(queryset.order_by("-created", "-id").values(*LIST_COLUMNS)[start : start + per_page])
    return JobPage([job_dict(r) for r in rows], page, per_page, total, now)


# A person's jobs on a cluster, counted. Grouped by the person (one group, or none without jobs), since a
# .values() query with an aggregate alone groups by every row.
_COUNT = Prepared(
    lambda person_id, cluster_id: (
        jobs_of(person_id, cluster_id).order_by().values("person_id").annotate(total=Count("id"))
    ),
    int,
    int,
)


# The dashboard's line per cluster: how many of the person's jobs are queued or running.
_ACTIVE = Prepared(
    lambda person_id, cluster_id: (
        jobs_of(person_id, cluster_id)
        .exclude(state__in=FINISHED_JOB_STATES)
        .order_by()
        .values("person_id")
        .annotate(total=Count("id"))
    ),
    int,
    int,
)


def active_count(person: Any, cluster: Cluster) -> int:
    """How many of the person's jobs on the cluster are not finished."""
    found = _ACTIVE.rows(person.pk, cluster.pk)
    return found[0]["total"] if found else 0


# The list page's partition filter: every partition the person's jobs on the cluster went to. order_by()
# first: JobRecord's default ordering would otherwise join the DISTINCT (partition, created, id), which is
# every row, not every partition.
_PARTITIONS = Prepared(
    lambda person_id, cluster_id: jobs_of(person_id, cluster_id).order_by().values("partition").distinct(),
    int,
    int,
)


def partitions_used(person: Any, cluster: Cluster) -> list[str]:
    """The partitions of the person's jobs on the cluster (a job may have none yet), sorted."""
    return sorted(row["partition"] for row in _PARTITIONS.rows(person.pk, cluster.pk) if row["partition"])


@functools.cache
def _first_page(per_page: int) -> Prepared:
    """The first page of a person's unfiltered list, its SQL compiled once per page size.

    Not one query with the count as a window over the list: that reads every row of a person with
    10,000 jobs before LIMIT (12 ms against 7 ms for the count and the page apart, bench row 2).
    """
    return Prepared(
        lambda person_id, cluster_id: (
            jobs_of(person_id, cluster_id).order_by("-created", "-id").values(*LIST_COLUMNS)[:per_page]
        ),
        int,
        int,
    )


def changed_since(person: Any, cluster: Cluster, since: float) -> bool:
    """Whether any of the person's jobs on the cluster changed after `since` (one indexed EXISTS)."""
    return jobs_of(person, cluster).filter(updated__gte=datetime.fromtimestamp(since, UTC)).exists()


def preview_parts(plan: Any, decision: Any) -> dict[str, Any]:
    """A submit preview's parts, for the submit page and a job template's page alike: the policy's
    verdict, the one cost, and the final job with human field names (nothing but the verdict without a plan).
    """
    words = preview_words(decision, plan.resources if plan is not None else None)
    if plan is None:
        return {"decision": decision, "words": words}
    rows = [(label(key), value, source) for key, value, source in plan.rows()]
    return {"plan": plan, "decision": decision, "final_rows": rows, "words": words}
