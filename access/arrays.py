"""A job array's size read from its `--array` expression: how many tasks, and how many may run at once.

The same reading as `array_tasks` in the job_submit plugin (access/slurm/job_submit.lua), so the console
and Slurm price an array alike: comma-separated items, each a task id `7`, a range `0-99` or a stepped
range `1-9:2`, then an optional `%N` throttle. Items are counted as written: an id listed twice is
priced twice (Slurm would run it once), which only ever asks for more than the array uses.
"""

from __future__ import annotations

import re

__all__ = ["array_tasks", "distinct_tasks", "holds_task", "without_throttle"]

# Past this many tasks distinct_tasks does not list ids one by one (Slurm's MaxArraySize is far lower).
DISTINCT_LIMIT = 1_000_000

_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?")
_THROTTLE = re.compile(r"%([0-9]+)\Z")


def array_tasks(expression: str) -> tuple[int, int]:
    """(tasks, at_once) of an array expression: "0-99%10" is (100, 10), "1,3,5-9:2" is (5, 5).

    ValueError, with a sentence naming what is wrong, when the expression cannot be read.
    """
    text = (expression or "").strip()
    if not text:
        raise ValueError("The array is empty; write it as ranges such as 0-15 or 1,3,5-9:2.")
    throttle = None
    found = _THROTTLE.search(text)
    if found:
        throttle = int(found.group(1))
        text = text[: found.start()]
        if throttle < 1:
            raise ValueError(
                f"The array's throttle %{found.group(1)} would let no task run; use %1 or more, e.g. "
                f"--array={text or '0-15'}%4."
            )
    tasks = 0
    for item in text.split(","):
        if not item:
            raise ValueError(f"The array {expression!r} has an empty item; separate task ids with one comma.")
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(
                f"The array item {item!r} in {expression!r} is not a task id, a range such as 0-15 or a "
                "stepped range such as 1-9:2."
            )
        first, last, step = match.groups()
        if last is None:
            tasks += 1
            continue
        first_id, last_id, step_size = int(first), int(last), int(step or 1)
        if last_id < first_id:
            raise ValueError(f"The array range {item} ends before it starts; write it as {last}-{first}.")
        if step_size < 1:
            raise ValueError(f"The array range {item} has a step of 0; use a step of 1 or more.")
        tasks += (last_id - first_id) // step_size + 1
    at_once = tasks if throttle is None else min(tasks, throttle)
    return tasks, at_once


def without_throttle(expression: str) -> str:
    """The expression without its `%N` throttle: what a suggested throttle is added to."""
    return _THROTTLE.sub("", (expression or "").strip())


def holds_task(expression: str, task_id: int) -> bool:
    """Whether the expression names task `task_id` ("3-99:2%10" holds 5, not 4); False if unreadable."""
    try:
        array_tasks(expression)
    except ValueError:
        return False
    for item in without_throttle(expression).split(","):
        first, last, step = _ITEM.fullmatch(item).groups()
        low, high = int(first), int(last if last is not None else first)
        if low <= task_id <= high and (task_id - low) % int(step or 1) == 0:
            return True
    return False


def distinct_tasks(expression: str) -> int | None:
    """How many different task ids the expression names, as Slurm runs them; None if unreadable or huge."""
    try:
        tasks, _ = array_tasks(expression)
    except ValueError:
        return None
    if tasks > DISTINCT_LIMIT:
        return None
    ids: set[int] = set()
    for item in without_throttle(expression).split(","):
        first, last, step = _ITEM.fullmatch(item).groups()
        ids.update(range(int(first), int(last if last is not None else first) + 1, int(step or 1)))
    return len(ids)
