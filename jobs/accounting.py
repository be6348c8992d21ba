"""A job's runs as Slurm's accounting has them, read with `sacct --json` as its owner on the head node.

JSON, never `sacct -P`: names, comments and paths are the person's own bytes, and a job named
`a|debug|COMPLETED|0:0|x` would shift every column after it. 22.05 lists every run of a requeued
job in its JSON whether or not `-D` is given; later releases list them with `-D`, which is always
passed. Field shapes differ between data_parser versions (plain numbers in 22.05, `{set, number}`
later; a state word or a list of them), and both are read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clusters import headnode
from clusters.models import Cluster
from clusters.slurm.parsing import number, text, timestamp

log = logging.getLogger("clusterra.jobs.accounting")

SACCT_TIMEOUT = 20.0
_EPOCH = datetime.fromtimestamp(0, UTC)
# State flags of a run that Slurm started over; sacct prints them in place of the base state.
_REQUEUE_FLAGS = frozenset({"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT"})


@dataclass(frozen=True)
class Run:
    """One run of a job: a requeued job has one per start."""

    job_id: int
    name: str
    partition: str
    state: str
    exit_code: int | None
    exit_signal: int | None
    submit_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    elapsed_seconds: int
    cpus: int | None
    gpus: int
    nodes: str
    working_directory: str
    # Set for a task of a job array: the array's job id and the task's index. The array's record of
    # tasks that never started has no index, and names them instead ("2-5%2").
    array_job_id: int | None = None
    array_task_id: int | None = None
    array_task_string: str = ""


def runs(cluster: Cluster, user: str, job_id: int, *, array_task: bool = False) -> list[Run] | None:
    """Every run of `job_id` in the order they started; None when accounting could not be asked.

    With `array_task`, `job_id` is one task of a job array (its own job id), which is then read too.
    """
    return _sacct(cluster, user, job_id, "job", lambda out: parse(out, job_id, array_task=array_task))


def array_runs(cluster: Cluster, user: str, array_job_id: int) -> list[Run] | None:
    """Every run of every task of an array (and its record of tasks never started); None if not asked."""
    return _sacct(cluster, user, array_job_id, "array", lambda out: parse_array(out, array_job_id))


def _sacct(cluster: Cluster, user: str, job_id: int, what: str, read) -> list[Run] | None:
    """`sacct --json -D -j ID` as the owner, read by `read`; None (and a warning) when that fails anywhere."""
    try:
        result = headnode.run(
            cluster,
            ["runuser", "-u", user, "--", "sacct", "--json", "-D", "-j", str(job_id)],
            timeout=SACCT_TIMEOUT,
        )
    except headnode.HeadNodeError as e:
        log.warning("sacct for %s %s on %s: %s", what, job_id, cluster.slug, e)
        return None
    if not result.ok:
        log.warning("sacct for %s %s on %s: %s", what, job_id, cluster.slug, result.output())
        return None
    try:
        return read(result.stdout)
    except ValueError as e:
        log.warning("sacct for %s %s on %s gave no JSON: %s", what, job_id, cluster.slug, e)
        return None


def parse_array(output: str, array_job_id: int) -> list[Run]:
    """The runs of an array's tasks in sacct's JSON, oldest first (each with its own job id)."""
    data = json.loads(output)
    found = []
    for raw in data.get("jobs") or []:
        if not isinstance(raw, dict) or number((raw.get("array") or {}).get("job_id")) != array_job_id:
            continue
        job_id = number(raw.get("job_id"))
        if job_id is not None:
            found.append(_run(raw, job_id))
    found.sort(key=lambda r: (r.start_time is None, r.start_time or _EPOCH, r.submit_time or _EPOCH))
    return found


def exit_status(cluster: Cluster, user: str, job_id: int) -> tuple[int | None, int | None] | None:
    """(exit code, signal) of the job's last run; None when accounting could not be asked.

    22.05's JSON reports 0 for a batch script that exited 3, so this one fact comes from sacct's
    text output: only columns Slurm writes itself, none a person can put a delimiter in.
    """
    try:
        result = headnode.run(
            cluster,
            ["runuser", "-u", user, "--", "sacct", "-n", "-P", "-X", "-o", "ExitCode", "-j", str(job_id)],
            timeout=SACCT_TIMEOUT,
        )
    except headnode.HeadNodeError:
        return None
    lines = result.stdout.split()
    if not result.ok or not lines:
        return None
    code, _, signal = lines[-1].partition(":")
    if not code.isdigit() or not signal.isdigit():
        return None
    return (None, int(signal)) if int(signal) else (int(code), None)


def parse(output: str, job_id: int, *, array_task: bool = False) -> list[Run]:
    """The runs of `job_id` in sacct's JSON (`{"jobs": [...]}`), oldest first.

    Array tasks are left out (the array's id brings every task, and the last task to start holds the
    array's own id) unless `array_task` asks for the task whose own id is `job_id`.
    """
    data = json.loads(output)
    found = []
    for raw in data.get("jobs") or []:
        if not isinstance(raw, dict) or number(raw.get("job_id")) != job_id:
            continue
        array = raw.get("array") or {}
        if (number(array.get("task_id")) is not None) != array_task:
            continue
        found.append(_run(raw, job_id))
    # Runs that started come first, by start; one still waiting (after a requeue) last.
    found.sort(key=lambda r: (r.start_time is None, r.start_time or _EPOCH, r.submit_time or _EPOCH))
    return found


def _run(raw: dict[str, Any], job_id: int) -> Run:
    times = raw.get("time") or {}
    state = (raw.get("state") or {}).get("current")
    if isinstance(state, list):
        # 22.05 writes the word sacct prints ("REQUEUED"); 24.11's and 26.05's data_parser the base state
        # and its flags: a requeued run is ["PENDING", "REQUEUED"]. The flag says how it ended, as sacct does.
        words = [text(word) for word in state]
        state = next((w for w in words if w in _REQUEUE_FLAGS), words[0] if words else "")
    code, signal = _exit(raw.get("exit_code") or {})
    allocated = (raw.get("tres") or {}).get("allocated") or []
    nodes = text(raw.get("nodes"))
    array = raw.get("array") or {}
    return Run(
        job_id=job_id,
        name=text(raw.get("name")),
        partition=text(raw.get("partition")),
        state=text(state).split()[0] if state else "",
        exit_code=code,
        exit_signal=signal,
        submit_time=timestamp(times.get("submission")),
        start_time=timestamp(times.get("start")),
        end_time=timestamp(times.get("end")),
        elapsed_seconds=number(times.get("elapsed")) or 0,
        cpus=_tres_count(allocated, "cpu"),
        gpus=_tres_count(allocated, "gres", "gpu") or 0,
        nodes="" if nodes in ("", "None assigned") else nodes,
        working_directory=text(raw.get("working_directory")),
        array_job_id=number(array.get("job_id")) or None,
        array_task_id=number(array.get("task_id")),
        array_task_string=text(array.get("task")),
    )


def _tres_count(items: list[Any], kind: str, name: str | None = None) -> int | None:
    total = None
    for item in items:
        if not isinstance(item, dict) or item.get("type") != kind:
            continue
        # A typed GPU ("gpu:a100") counts too; "gpumem" and other gres do not.
        if name is not None and text(item.get("name")).split(":")[0] != name:
            continue
        count = number(item.get("count"))
        if count is not None:
            total = (total or 0) + count
    return total


def _exit(value: dict[str, Any]) -> tuple[int | None, int | None]:
    signal = number((value.get("signal") or {}).get("id")) if isinstance(value.get("signal"), dict) else None
    code = number(value.get("return_code"))
    if signal:
        return None, signal
    return code, None
