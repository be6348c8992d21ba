"""Where a job writes its output, and its last lines read as the job's owner on the head node."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from clusters import headnode
from jobs.models import JobRecord

DEFAULT_LINES = 50
MAX_LINES = 2000
# However long the lines, one answer stays small enough for a page and a terminal.
MAX_BYTES = 256 * 1024
READ_TIMEOUT = 20.0
# `tail` as the user, fixed shell text, values as "$1"…: the last LINES lines, at most BYTES of them.
# Bytes first: `tail -c` seeks to the end of a regular file, where `tail -n` reads backwards until it
# has counted its lines (minutes of head-node CPU through a 10 TB sparse file of zeros, which has none).
TAIL = (
    '[ -e "$1" ] || { echo "No such file" >&2; exit 3; }; '
    '[ -f "$1" ] || { echo "not a regular file" >&2; exit 4; }; '
    # Asked here, as the person: the pipe's status is the last tail's, which never sees the first one fail.
    '[ -r "$1" ] || { echo "Permission denied" >&2; exit 5; }; '
    'tail -c "$3" -- "$1" | tail -n "$2"'
)
_PATTERN = re.compile(r"%(%|\d*[AajJNnstux])")


@dataclass(frozen=True)
class Output:
    """The last lines of one stream, or why they cannot be shown (`error`)."""

    stream: str
    path: str
    text: str = ""
    error: str = ""
    truncated: bool = False

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "text": self.text, "error": self.error, "truncated": self.truncated}


def expand(
    pattern: str,
    *,
    job_id: int,
    name: str,
    user: str,
    working_directory: str,
    node: str = "",
    array_job_id: int | None = None,
    array_task_id: int | None = None,
) -> str:
    """An sbatch filename pattern (%j, %x, %u, %A, %a, %N, %%) made a concrete absolute path.

    Slurm's default is `slurm-%j.out` in the working directory (`slurm-%A_%a.out` for a task of an
    array); a relative path is relative to the working directory, as the job sees it. For a task,
    %A is the array's job id, %a the task's index and %j the task's own job id.
    """
    is_task = array_job_id is not None and array_task_id is not None
    pattern = pattern or ("slurm-%A_%a.out" if is_task else "slurm-%j.out")

    def one(match: re.Match[str]) -> str:
        spec = match.group(1)
        if spec == "%":
            return "%"
        width, letter = spec[:-1], spec[-1]
        value = {
            "j": str(job_id),
            "J": str(job_id),
            "A": str(array_job_id if is_task else job_id),
            "a": str(array_task_id if is_task else 0),
            "x": name,
            "u": user,
            "N": node or "localhost",
            "n": "0",
            "t": "0",
            "s": "batch",
        }[letter]
        return value.zfill(int(width)) if width and value.isdigit() else value

    path = _PATTERN.sub(one, pattern)
    if not path.startswith("/"):
        path = posixpath.join(working_directory or "/", path)
    return posixpath.normpath(path)


def paths_for(record: JobRecord, stdout: str, stderr: str) -> tuple[str, str]:
    """(stdout path, stderr path) of a record; stderr shares the stdout file unless the job said otherwise."""
    common = {
        "job_id": record.slurm_job_id or 0,
        "name": record.name,
        "user": record.posix_user,
        "working_directory": record.working_directory,
        "node": record.node_list.split(",")[0] if record.node_list else "",
    }
    if record.array_parent_id is not None:
        common["array_job_id"] = record.array_parent.slurm_job_id
        common["array_task_id"] = record.array_task_id
    out = expand(stdout, **common)
    err = expand(stderr, **common) if stderr else out
    return out, err


def tail(record: JobRecord, stream: str, lines: int = DEFAULT_LINES) -> Output:
    """The last `lines` lines of `stream` ("stdout" or "stderr"), read by the job's owner."""
    path = record.stdout_path if stream == "stdout" else record.stderr_path
    if not path:
        return Output(stream, "", error="Slurm did not say where this job writes it.")
    lines = max(1, min(int(lines), MAX_LINES))
    try:
        result = headnode.run(
            record.cluster,
            [
                "runuser",
                "-u",
                record.posix_user,
                "--",
                "sh",
                "-c",
                TAIL,
                "sh",
                path,
                str(lines),
                str(MAX_BYTES),
            ],
            timeout=READ_TIMEOUT,
        )
    except headnode.HeadNodeError as e:
        return Output(stream, path, error=str(e))
    if result.exit_code == 3:
        waiting = record.start_time is None and not record.is_finished
        words = (
            "The job has not started yet, so there is no output." if waiting else f"{path} does not exist."
        )
        return Output(stream, path, error=words)
    if not result.ok:
        said = result.output()
        if "Permission denied" in said:
            said = f"{record.posix_user} may not read {path} (Permission denied)."
        return Output(stream, path, error=said or f"reading {path} failed (exit {result.exit_code}).")
    text = result.stdout
    return Output(stream, path, text=text, truncated=len(text.encode()) >= MAX_BYTES)
